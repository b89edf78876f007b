#!/usr/bin/env python3
"""Benchmark: forward time against MACs of cut model-zoo nets (runs/bench/speed.json).

A thin wrapper of `python -m pytrim bench-speed` (pytrim/cli/bench_speed.py); --help for its options."""

from pytrim.cli import run

if __name__ == "__main__":
    run("bench-speed")
