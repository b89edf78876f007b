"""Benchmark: the whole statistics path (`collect`, down to its HDF5 file) against a bare Caffe
forward pass over the same images (runs/bench/apoz_overhead.json).

On the net given (--net, --weights: LeNet in `make bench`) over its first --images TEST images,
and on full-size model-zoo nets (--nets, default resnet50) with random weights and 64 generated
images (half as many pairs); each pair of timings interleaved --repeats times after a warm-up.
Per net: "ratio" (the median of the per-pair ratios collect / forward), "spread" (their
interquartile range), "ratio_of_fastest" (the fastest collect over the fastest forward).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from pytrim.caffeio.upgrade import current_format
from pytrim.caffeio.zoo import NETS
from pytrim.cli.options import net_names, positive
from pytrim.core.files import write_json
from pytrim.experiments.bench_apoz import apoz_overhead, zoo_case

OUTPUTS = {"out": "file"}
ZOO_IMAGES = 64  # eight batches of 8: a pass long enough that a net's set-up is not most of it


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--net", type=Path, required=True, help="train_val prototxt with a TEST Data layer")
    p.add_argument("--weights", type=Path, required=True, help="caffemodel")
    p.add_argument("--images", type=positive, default=5000, help="TEST images of --net per timing (default 5000)")
    p.add_argument("--repeats", type=positive, default=40,
                   help="interleaved pairs of timings (default 40: single pairs disagree by 10-20%%)")  # fmt: skip
    p.add_argument("--nets", default="resnet50", help=f"model-zoo nets timed on {ZOO_IMAGES} generated images too "
                   "(default resnet50; 'none': only --net)")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("runs/bench/apoz_overhead.json"))


def line(name: str, result: dict[str, Any]) -> str:
    rate = result["images"] / result["forward_seconds"], result["images"] / result["collect_seconds"]
    spread = f"interquartile spread {result['spread']:.3f}, {result['repeats']} pairs; fastest of each: " \
             f"{result['ratio_of_fastest']:.3f}"  # fmt: skip
    return (f"{name}: bare forward {rate[0]:.1f} images/s, whole collect {rate[1]:.1f} images/s: ratio "
            f"{result['ratio']:.3f} ({spread})")  # fmt: skip


def execute(args: argparse.Namespace) -> dict[str, Any]:
    zoo = [] if args.nets == "none" else net_names(args.nets, NETS)
    net, weights = current_format(args.net, "net"), current_format(args.weights, "weights")
    results = {net.parent.name or net.stem: apoz_overhead(net, weights, args.images, args.repeats)}
    print(line(next(iter(results)), results[next(iter(results))]), flush=True)
    with tempfile.TemporaryDirectory(prefix="pytrim-bench-") as tmp:
        for name in zoo:
            tv, random = zoo_case(name, Path(tmp) / name, ZOO_IMAGES, 8)
            results[name] = apoz_overhead(tv, random, ZOO_IMAGES, max(3, args.repeats // 2))
            print(line(name, results[name]), flush=True)
    write_json(args.out, results)
    print(args.out)
    return results
