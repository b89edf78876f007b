#!/usr/bin/env python3
"""Two caffemodels side by side on the same data (e.g. the published VGG-16 vs a trimmed one).

For each: top-1 and top-5 over the TEST data of its train_val prototxt (every image once,
or the first --limit), parameters, FLOPs per image (2 per multiply-add, Convolution and
InnerProduct layers), caffemodel file size, and forward time per image (best of 3 batches).
Old-format (V0/V1) files are upgraded first.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pytrim.cli import run
from pytrim.collect import load_net
from pytrim.cut import count_params
from pytrim.evaluate import evaluate
from pytrim.measure import flops, forward_seconds_per_image
from pytrim.protoutil import read_net
from pytrim.upgrade import current_format


def measure(net_path: Path, weights: Path, limit: int | None) -> dict:
    net_path, weights = current_format(net_path, "net"), current_format(weights, "weights")
    acc = evaluate(net_path, weights, limit=limit, progress=False)
    net = load_net(net_path, weights)
    return {
        "net": str(net_path),
        "weights": str(weights),
        "top1": acc.top1,
        "top5": acc.top5,
        "images": acc.images,
        "params": count_params(weights),
        "flops": flops(net, read_net(net_path)),
        "file_mb": weights.stat().st_size / 2**20,
        "ms_per_image": 1000 * forward_seconds_per_image(net),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", type=Path, required=True, help="train_val prototxt of the first model")
    parser.add_argument("--weights", type=Path, required=True, help="first caffemodel")
    parser.add_argument("--net2", type=Path, help="train_val prototxt of the second model (default: --net)")
    parser.add_argument("--weights2", type=Path, required=True, help="second caffemodel")
    parser.add_argument("--limit", type=int, help="evaluate only the first N images")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    a = measure(args.net, args.weights, args.limit)
    b = measure(args.net2 or args.net, args.weights2, args.limit)
    if args.json:
        print(json.dumps({"a": a, "b": b}, indent=1))
        return 0
    rows = [
        ("top-1", f"{a['top1']:.2%}", f"{b['top1']:.2%}"),
        (
            "top-5",
            f"{a['top5']:.2%}" if a["top5"] is not None else "-",
            f"{b['top5']:.2%}" if b["top5"] is not None else "-",
        ),
        ("images", str(a["images"]), str(b["images"])),
        ("parameters", f"{a['params']:,}", f"{b['params']:,}  ({a['params'] / b['params']:.2f}x fewer)"),
        ("FLOPs/image", f"{a['flops']:,}", f"{b['flops']:,}  ({a['flops'] / b['flops']:.2f}x fewer)"),
        ("file size", f"{a['file_mb']:.1f} MB", f"{b['file_mb']:.1f} MB"),
        ("forward/image", f"{a['ms_per_image']:.2f} ms", f"{b['ms_per_image']:.2f} ms"),
    ]
    print(f"{'':<14} {args.weights.name:>26} {args.weights2.name:>26}")
    for name, x, y in rows:
        print(f"{name:<14} {x:>26} {y:>26}")
    return 0


if __name__ == "__main__":
    run(main)
