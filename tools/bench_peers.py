#!/usr/bin/env python3
"""Benchmark: pytrim and Torch-Pruning on the same nets, data and budget (runs/bench/peers.json).

A thin wrapper of `python -m pytrim bench-peers` (pytrim/cli/bench_peers.py); --help for its options."""

from pytrim.cli import run

if __name__ == "__main__":
    run("bench-peers")
