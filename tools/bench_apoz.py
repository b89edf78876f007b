#!/usr/bin/env python3
"""Benchmark: APoZ statistics collection vs a bare forward pass, same net, same images. (a thin
wrapper of `python -m pytrim bench-apoz`, pytrim/cli/bench_apoz.py; --help for its options)."""

from pytrim.cli import run
from pytrim.cli.bench_apoz import main

if __name__ == "__main__":
    run(main)
