#!/usr/bin/env python3
"""Score the neurons of some layers with a unit pruning criterion (higher = pruned first). (a
thin wrapper of `python -m pytrim score`, pytrim/cli/score.py; --help for its options)."""

from pytrim.cli import run
from pytrim.cli.score import main

if __name__ == "__main__":
    run(main)
