#!/usr/bin/env python3
"""Any net end to end on filler weights and generated images (a thin wrapper of `python -m
pytrim synthetic`, pytrim/cli/synthetic.py; --help for its options)."""

from pytrim.cli import run
from pytrim.cli.synthetic import main

if __name__ == "__main__":
    run(main)
