#!/usr/bin/env python3
"""Cut the selected neurons out of a net: new train_val/deploy prototxts and caffemodel. (a
thin wrapper of `python -m pytrim cut`, pytrim/cli/cut.py; --help for its options)."""

from pytrim.cli import run
from pytrim.cli.cut import main

if __name__ == "__main__":
    run(main)
