#!/usr/bin/env python3
"""Benchmark: scale-out on Ray (runs/bench/scale.json). APoZ statistics of the LeNet test
images in one process and on 1 and 2 local Ray workers (one BLAS thread each; counts must be
identical), and a small criteria sweep (sweep-criteria) on 1 and 2 workers. Prints and writes
speedup_2_workers, ray_overhead_1_worker and sweep_speedup_2_workers.

A thin wrapper of `python -m pytrim bench-scale` (pytrim/cli/bench_scale.py); --help for its options."""

from pytrim.cli import run

if __name__ == "__main__":
    run("bench-scale")
