#!/usr/bin/env python3
"""Train (or fine-tune) a net with Caffe's solver and save the final caffemodel.

A thin wrapper of `python -m pytrim train` (pytrim/cli/train.py); --help for its options."""

from pytrim.cli import run

if __name__ == "__main__":
    run("train")
