#!/usr/bin/env python3
"""Do two samples pick the same neurons? APoZ on the net's TEST data and on a seeded random
sample of the same size from another LMDB (e.g. ImageNet validation vs training images, as
the paper checked), the paper's rule on each, and the overlap of the removed neurons per
layer (common, Jaccard, share of the first choice also in the second).

A thin wrapper of `python -m pytrim overlap` (pytrim/cli/overlap.py); --help for its options."""

from pytrim.cli import run

if __name__ == "__main__":
    run("overlap")
