#!/usr/bin/env python3
"""Network Trimming, iterated: baseline -> (collect -> select -> cut -> verify -> retrain) x N.

A thin wrapper of `python -m pytrim trim` (pytrim/cli/trim.py); --help for its options."""

from pytrim.cli import run

if __name__ == "__main__":
    run("trim")
