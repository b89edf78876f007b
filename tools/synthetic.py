#!/usr/bin/env python3
"""Any net, end to end on non-degenerate random weights and generated inputs: collect, choose
a fraction of every trimmable channel group, cut, verify, a few solver iterations.

A thin wrapper of `python -m pytrim synthetic` (pytrim/cli/synthetic.py); --help for its options."""

from pytrim.cli import run

if __name__ == "__main__":
    run("synthetic")
