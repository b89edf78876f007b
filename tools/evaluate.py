#!/usr/bin/env python3
"""Top-1 (and top-5) of a caffemodel on the TEST data of its train_val prototxt.

A thin wrapper of `python -m pytrim evaluate` (pytrim/cli/evaluate.py); --help for its options."""

from pytrim.cli import run

if __name__ == "__main__":
    run("evaluate")
