"""Benchmark: APoZ statistics collection vs a bare forward pass, same net, same images.

Both run on the same Net over the same TEST images: forward() alone, and forward() with the
zero counting that `collect` does, interleaved --repeats times after a warm-up. Prints and
writes to --out {"ratio": median of the per-pair ratios collect/forward, "spread": their
interquartile range, ...}.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytrim.caffeio.upgrade import current_format
from pytrim.cli.options import positive
from pytrim.core.files import write_json
from pytrim.experiments.bench_apoz import apoz_overhead

OUTPUTS = {"out": "file"}


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--net", type=Path, required=True, help="train_val prototxt with a TEST Data layer")
    p.add_argument("--weights", type=Path, required=True, help="caffemodel")
    p.add_argument("--images", type=positive, default=5000, help="TEST images per timing (default 5000)")
    p.add_argument("--repeats", type=positive, default=15, help="interleaved pairs of timings (default 15)")
    p.add_argument("--out", type=Path, default=Path("runs/bench/apoz_overhead.json"))


def execute(args: argparse.Namespace) -> dict[str, Any]:
    net, weights = current_format(args.net, "net"), current_format(args.weights, "weights")
    result = apoz_overhead(net, weights, args.images, args.repeats)
    write_json(args.out, result)
    rate = result["images"] / result["forward_seconds"], result["images"] / result["collect_seconds"]
    print(
        f"bare forward: {rate[0]:.0f} images/s; with APoZ counting: {rate[1]:.0f} images/s; ratio "
        f"{result['ratio']:.3f} (interquartile spread {result['spread']:.3f}, {args.repeats} pairs): {args.out}"
    )
    return result
