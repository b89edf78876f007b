#!/usr/bin/env python3
"""NN Relief iterated as its authors run it, on LeNet-300-100 and LeNet-5 (a thin wrapper of
`python -m pytrim relief`, pytrim/cli/relief.py; --help for its options)."""

from pytrim.cli import run
from pytrim.cli.relief import main

if __name__ == "__main__":
    run(main)
