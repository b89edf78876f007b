#!/usr/bin/env python3
"""Sweep pruning criteria on LeNet-5 and LeNet-300-100 (make lenet-compare): accuracy against
compression, every criterion at several points, several seeds per point.

A thin wrapper of `python -m pytrim sweep-criteria` (pytrim/cli/sweep_criteria.py); --help for its options."""

from pytrim.cli import run

if __name__ == "__main__":
    run("sweep-criteria")
