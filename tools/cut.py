#!/usr/bin/env python3
"""Cut the selected neurons out of a net: new train_val/deploy prototxts and caffemodel.

A thin wrapper of `python -m pytrim cut` (pytrim/cli/cut.py); --help for its options."""

from pytrim.cli import run

if __name__ == "__main__":
    run("cut")
