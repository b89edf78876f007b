#!/usr/bin/env python3
"""Choose the neurons to cut from an APoZ statistics file; write a selection JSON.

A thin wrapper of `python -m pytrim choose` (pytrim/cli/choose.py); --help for its options."""

from pytrim.cli import run

if __name__ == "__main__":
    run("choose")
