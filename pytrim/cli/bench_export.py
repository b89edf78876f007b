"""Benchmark: every net `pytrim zoo` generates (the model-zoo nets at full size and the
Fashion-MNIST benchmark nets), with random non-degenerate weights, original and with a quarter of
every trimmable group cut: exported to ONNX and verified in ONNX Runtime? its largest relative
difference to Caffe, OpenCV's difference reading the Caffe files, and the forward time of one
image on one thread in OpenCV's DNN and ONNX Runtime against Caffe's (runs/bench/export.json;
the ONNX models are kept in runs/bench/export/).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytrim.cli.options import net_names, positive, write_benchmark
from pytrim.experiments.bench_export import NETS, bench_export

OUTPUTS = {"out": "file"}


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nets", default=",".join(NETS), help=f"comma-separated (default: {','.join(NETS)})")
    p.add_argument("--repeats", type=positive, default=5, help="timed samples per runtime (default 5)")
    p.add_argument("--out", type=Path, default=Path("runs/bench/export.json"))


def execute(args: argparse.Namespace) -> dict[str, Any]:
    chosen = net_names(args.nets, NETS)
    log = (lambda _: None) if args.quiet else print
    return write_benchmark(args.out, bench_export(chosen, args.repeats, args.out, log))
