#!/usr/bin/env python3
"""NN Relief on LeNet-300-100 and LeNet-5, iterated as its authors run it (make lenet-relief).

A thin wrapper of `python -m pytrim relief` (pytrim/cli/relief.py); --help for its options."""

from pytrim.cli import run

if __name__ == "__main__":
    run("relief")
