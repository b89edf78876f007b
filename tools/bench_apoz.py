#!/usr/bin/env python3
"""Benchmark: APoZ statistics collection vs a bare forward pass, same net, same images.

A thin wrapper of `python -m pytrim bench-apoz` (pytrim/cli/bench_apoz.py); --help for its options."""

from pytrim.cli import run

if __name__ == "__main__":
    run("bench-apoz")
