#!/usr/bin/env python3
"""Write LeNet's data as LMDBs (Fashion-MNIST by default, MNIST with --download or --from):
a thin wrapper of `python -m pytrim prepare-lenet` (pytrim/cli/prepare_lenet.py)."""

from pytrim.cli import run
from pytrim.cli.prepare_lenet import main

if __name__ == "__main__":
    run(main)
