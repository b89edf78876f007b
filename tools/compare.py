#!/usr/bin/env python3
"""Two models side by side on the same data (e.g. the published VGG-16 and a trimmed one).

A thin wrapper of `python -m pytrim compare` (pytrim/cli/compare.py); --help for its options."""

from pytrim.cli import run

if __name__ == "__main__":
    run("compare")
