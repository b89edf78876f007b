#!/usr/bin/env python3
"""Choose the neurons to cut from an APoZ statistics file; write a selection JSON. (a thin
wrapper of `python -m pytrim choose`, pytrim/cli/choose.py; --help for its options)."""

from pytrim.cli import run
from pytrim.cli.choose import main

if __name__ == "__main__":
    run(main)
