#!/usr/bin/env python3
"""Score the neurons of some layers with a unit pruning criterion (higher = pruned first).

A thin wrapper of `python -m pytrim score` (pytrim/cli/score.py); --help for its options."""

from pytrim.cli import run

if __name__ == "__main__":
    run("score")
