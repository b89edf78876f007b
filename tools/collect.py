#!/usr/bin/env python3
"""Collect APoZ statistics: run a TEST-phase net over its validation data and count zeros.

A thin wrapper of `python -m pytrim collect` (pytrim/cli/collect.py); --help for its options."""

from pytrim.cli import run

if __name__ == "__main__":
    run("collect")
