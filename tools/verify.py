#!/usr/bin/env python3
"""Verify a cut: the trimmed net must equal the original with the removed neurons silenced.

A thin wrapper of `python -m pytrim verify` (pytrim/cli/verify.py); --help for its options."""

from pytrim.cli import run

if __name__ == "__main__":
    run("verify")
