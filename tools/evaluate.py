#!/usr/bin/env python3
"""Top-1 / top-5 accuracy of a caffemodel on the data of its net's TEST-phase Data layer.

Every image of the LMDB is scored exactly once (Caffe's own `caffe test` wraps around).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pytrim.cli import run
from pytrim.evaluate import evaluate
from pytrim.upgrade import current_format


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", type=Path, required=True, help="train_val prototxt with a TEST Data layer")
    parser.add_argument("--weights", type=Path, required=True, help="caffemodel")
    parser.add_argument("--limit", type=int, help="score only the first N images")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    args.net, args.weights = current_format(args.net, "net"), current_format(args.weights, "weights")
    acc = evaluate(args.net, args.weights, limit=args.limit, progress=not args.quiet)
    if args.json:
        print(json.dumps({"top1": acc.top1, "top5": acc.top5, "images": acc.images}))
    else:
        top5 = f", top-5 {acc.top5:.2%}" if acc.top5 is not None else ""
        print(f"test top-1 {acc.top1:.2%}{top5} on {acc.images} images")
    return 0


if __name__ == "__main__":
    run(main)
