"""Two models side by side on the same data (e.g. the published VGG-16 and a trimmed one).

For each: top-1 and top-5 over the TEST data of its train_val prototxt (every image once,
or the first --images), parameters, multiply-adds (MACs) per image, caffemodel bytes, and
forward time measured by Caffe, both nets timed interleaved in this process at batch 1 and
a larger batch (8 for ImageNet-size inputs, else 32); ratios are the first over the second.
Old-format (V0/V1) files are upgraded first.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pytrim.caffeio.upgrade import current_format
from pytrim.cli.options import add_images
from pytrim.export.runtimes import TITLES
from pytrim.stats.cost import compare_cost, speed_text
from pytrim.stats.evaluate import evaluate


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--net", type=Path, required=True, help="train_val prototxt of the first (reference) model")
    p.add_argument("--weights", type=Path, required=True, help="first caffemodel")
    p.add_argument("--trimmed-net", type=Path, help="train_val prototxt of the second model (default: --net)")
    p.add_argument("--trimmed-weights", type=Path, required=True, help="second caffemodel")
    add_images(p, "evaluate only the first N images (default: all)")
    p.add_argument("--repeats", type=int, default=5, help="forward-time samples per net (default 5; 0: no timing)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")


def table(a: dict, b: dict, cost: dict, names: tuple[str, str]) -> str:
    def pct(value: float | None) -> str:
        return f"{value:.2%}" if value is not None else "-"

    rows = [("top-1", pct(a["top1"]), pct(b["top1"])), ("top-5", pct(a["top5"]), pct(b["top5"])),
            ("images", str(a["images"]), str(b["images"]))]  # fmt: skip
    for key, unit in (("params", ""), ("macs", ""), ("bytes", " B")):
        ref, other = cost["reference"][key], cost["nets"][0]
        rows.append((key, f"{ref:,}{unit}", f"{other[key]:,}{unit}  ({other[key + '_ratio']:.2f}x fewer)"))
    for runtime, by_threads in cost["timing"].get("runtimes", {}).items():
        for threads, by_batch in by_threads.items():
            for batch, timed in by_batch.items():
                rows.append(forward_row(f"{TITLES[runtime]}, {threads.removeprefix('threads')}t, b{batch}", timed,
                                        cost["nets"][0]["runtimes"][runtime][threads][batch]))  # fmt: skip
    lines = [f"{'':<26} {names[0]:>22} {names[1]:>44}"]
    lines += [f"{name:<26} {x:>22} {y:>44}" for name, x, y in rows]
    lines.append(f"(forward times: t threads, b batch; Caffe with OpenBLAS {cost['blas_core']} kernels)")
    return "\n".join(lines)


def forward_row(name: str, timed: dict[str, Any], speed: dict[str, Any]) -> tuple[str, str, str]:
    """One runtime's forward times of both nets at one batch and thread count."""
    if "refused" in timed:
        return name, "n/a", timed["refused"][:40]
    seconds = timed["seconds"]
    return name, f"{1000 * seconds[0]:.2f} ms", f"{1000 * seconds[1]:.2f} ms  ({speed_text(speed)} faster)"


def execute(args: argparse.Namespace) -> dict[str, Any]:
    net, weights = current_format(args.net, "net"), current_format(args.weights, "weights")
    other = current_format(args.trimmed_net or args.net, "net")
    other_weights = current_format(args.trimmed_weights, "weights")
    a = evaluate(net, weights, args.images, progress=False).to_json()
    b = evaluate(other, other_weights, args.images, progress=False).to_json()
    cost = compare_cost((net, weights), [(other, other_weights)], args.repeats)
    result = {"a": a, "b": b, "cost": cost}
    print(json.dumps(result, indent=1) if args.json else table(a, b, cost, (weights.name, other_weights.name)))
    return result
