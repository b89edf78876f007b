"""Benchmark: forward time against MACs of cut model-zoo nets (runs/bench/speed.json).

ResNet-50, VGG-16, MobileNet v2, GoogLeNet and SqueezeNet 1.1 at full size with random
non-zero weights; a quarter and a half of every trimmable group removed, with and without
rounding the kept widths to a multiple of 8; per case the MACs ratio, the time ratio at batch
1 and batch 8, and efficiency = time ratio / MACs ratio; where the time goes (every layer
timed alone): the same efficiency of the MAC layers alone, and the speedup and share of time
of all the other layers. Records the CPU, BLAS kernels and threads.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytrim.cli.options import net_names, positive, write_benchmark
from pytrim.experiments.bench_speed import NETS, bench_speed

OUTPUTS = {"out": "file"}


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nets", default=",".join(NETS), help=f"comma-separated (default: {','.join(NETS)})")
    p.add_argument("--repeats", type=positive, default=5, help="timed samples per net and batch (default 5)")
    p.add_argument("--threads", type=positive, help="BLAS threads (default: every core)")
    p.add_argument("--out", type=Path, default=Path("runs/bench/speed.json"))


def execute(args: argparse.Namespace) -> dict[str, Any]:
    chosen = net_names(args.nets, NETS)
    log = (lambda _: None) if args.quiet else print
    return write_benchmark(args.out, bench_speed(chosen, args.repeats, args.threads, log))
