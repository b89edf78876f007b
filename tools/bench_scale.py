#!/usr/bin/env python3
"""Benchmark: scale-out on Ray, statistics and a sweep on 1 and 2 workers (a thin wrapper of
`python -m pytrim bench-scale`, pytrim/cli/bench_scale.py; --help for its options)."""

from pytrim.cli import run
from pytrim.cli.bench_scale import main

if __name__ == "__main__":
    run(main)
