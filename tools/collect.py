#!/usr/bin/env python3
"""Collect APoZ statistics: run a TEST-phase net over its validation data and count zeros. (a
thin wrapper of `python -m pytrim collect`, pytrim/cli/collect.py; --help for its options)."""

from pytrim.cli import run
from pytrim.cli.collect import main

if __name__ == "__main__":
    run(main)
