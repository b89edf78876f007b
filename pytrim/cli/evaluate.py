"""Top-1 (and top-5) of a caffemodel on the TEST data of its train_val prototxt.

Every image of the TEST data is scored exactly once (Caffe's own `caffe test` wraps around
and counts some twice). Old-format (V0/V1) files are upgraded first.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytrim.caffeio.upgrade import current_format
from pytrim.cli.options import add_feed, add_images, add_workers, feed_of, workers_of
from pytrim.stats.evaluate import evaluate


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--net", type=Path, required=True, help="train_val (TEST data layer), or deploy with --feed")
    p.add_argument("--weights", type=Path, required=True, help="caffemodel")
    add_images(p, "score only the first N images (default: all)")
    add_feed(p)
    add_workers(p)


def execute(args: argparse.Namespace) -> dict[str, Any]:
    net, weights = current_format(args.net, "net"), current_format(args.weights, "weights")
    accuracy = evaluate(net, weights, args.images, not args.quiet, feed_of(args), **workers_of(args))
    top5 = f", top-5 {accuracy.top5:.2%}" if accuracy.top5 is not None else ""
    stderr = f" (standard error {100 * accuracy.top1_stderr:.2f} points)"
    print(f"test top-1 {accuracy.top1:.2%}{top5} on {accuracy.images} images{stderr}")
    return accuracy.to_json()
