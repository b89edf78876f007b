"""What a net costs beside another (e.g. a trimmed net beside its original): parameters,
multiply-adds (MACs) per image, caffemodel bytes, and forward time where nets run: Caffe,
OpenCV's DNN (reading the prototxt and caffemodel) and ONNX Runtime (the exported model), the
nets timed interleaved in this process after a warm-up, the median of --repeats samples, at
batch 1 and a larger batch (8 for ImageNet-size inputs, else 32; or --batch), on one thread and
on --threads (default: every core). Ratios are the first net over the second (> 1: the second
is smaller or faster); a ratio whose rounds disagree, or that exceeds the MACs ratio by more
than 1.5x, is marked not credible. --by-layer also times every layer alone in Caffe and says
where the time goes: the speedup of the MAC layers and of the others, the seconds per layer type.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytrim.cli.options import numbers, positive
from pytrim.stats.cost import compare_cost, cost_text


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--net", type=Path, required=True, help="the reference prototxt (train_val or deploy)")
    p.add_argument("--weights", type=Path, help="its caffemodel (default: the net's fillers)")
    p.add_argument("--trimmed-net", type=Path, required=True, help="the prototxt compared with it")
    p.add_argument("--trimmed-weights", type=Path, help="its caffemodel")
    p.add_argument("--batch", help="batch sizes, e.g. 1,8 (default: 1 and 8 or 32)")
    p.add_argument("--repeats", type=int, default=7, help="timed samples per net and batch (default 7; 0: no timing)")
    p.add_argument("--threads", type=positive, help="BLAS threads (default: every core)")
    p.add_argument("--by-layer", action="store_true", help="also the time per layer type, and the MAC layers' speedup")


def execute(args: argparse.Namespace) -> dict[str, Any]:
    batches = list(numbers(args.batch, int, "--batch")) if args.batch else None
    cost = compare_cost((args.net, args.weights), [(args.trimmed_net, args.trimmed_weights)], args.repeats,
                        args.threads, batches, args.by_layer)  # fmt: skip
    entry = cost["nets"][0]
    print(f"parameters {entry['params_ratio']:.2f}x fewer, MACs {entry['macs_ratio']:.2f}x fewer ({cost['cpu']}, "
          f"OpenBLAS {cost['blas_core']} kernels)")  # fmt: skip
    for part in cost_text(entry).removeprefix("; ").split("; "):
        print(f"  {part}")
    for batch, timed in cost["timing"].items() if args.by_layer else []:
        if batch != "runtimes":
            print(layer_lines(timed["by_layer"]))
    return cost


def layer_lines(split: dict[str, Any]) -> str:
    """Where the time goes at one batch size: MAC layers against the others, then per type."""
    first, second = split["seconds_by_type"]
    speedups = (split["mac_layers_speedup"][1], split["other_layers_speedup"][1])
    mac, other = (f"{v:.2f}x" if v else "n/a" for v in speedups)
    lines = [f"batch {split['batch']}: MAC layers {mac} faster, the other layers {other} "
             f"({split['other_layers_share']:.0%} of the first net's time)"]  # fmt: skip
    for kind in sorted(first, key=lambda k: -first[k]):
        after = second.get(kind, 0.0)
        speedup = f"{first[kind] / after:.2f}x" if after else "gone"
        lines.append(f"  {kind:<16} {first[kind] * 1e3:9.2f} ms -> {after * 1e3:9.2f} ms  {speedup}")
    return "\n".join(lines)
