#!/usr/bin/env python3
"""Compare pruning criteria on LeNet-5 and LeNet-300-100 (make lenet-compare). (a thin wrapper
of `python -m pytrim compare-criteria`, pytrim/cli/compare_criteria.py; --help for its
options)."""

from pytrim.cli import run
from pytrim.cli.compare_criteria import main

if __name__ == "__main__":
    run(main)
