"""Top-1 (and top-5) of a caffemodel on the TEST data of its train_val prototxt, or the mean
of any TEST-phase output blob (--metric: a loss, a distance), with its standard error.

Every image of the TEST data is scored exactly once (Caffe's own `caffe test` wraps around
and counts some twice). With --out, the per-image (or per-batch, for a blob with one value
per batch) values are kept, so that two nets scored on the same images can be compared
pairwise. Old-format (V0/V1) files are upgraded first.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytrim.caffeio.env import blas_config
from pytrim.caffeio.upgrade import current_format
from pytrim.cli.options import add_feed, add_images, add_workers, check_direction, feed_of, workers_of
from pytrim.stats.evaluate import ACCURACY, evaluate

OUTPUTS = {"out": "file"}


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--net", type=Path, required=True, help="train_val (TEST data layer), or deploy with --feed")
    p.add_argument("--weights", type=Path, required=True, help="caffemodel")
    add_images(p, "score only the first N images (default: all)")
    p.add_argument("--metric", default=ACCURACY, help="accuracy (top-1, the default) or a TEST output blob")
    p.add_argument("--lower-is-better", action="store_true", help="--metric: lower values are better (a loss)")
    p.add_argument("--out", type=Path, help="keep the per-image values of the metric here (.npz)")
    add_feed(p)
    add_workers(p)


def check(args: argparse.Namespace) -> None:
    check_direction(args.metric, args.lower_is_better)


def execute(args: argparse.Namespace) -> dict[str, Any]:
    net, weights = current_format(args.net, "net"), current_format(args.weights, "weights")
    result = evaluate(net, weights, args.images, not args.quiet, feed_of(args), **workers_of(args),
                      metric=args.metric, lower_is_better=args.lower_is_better)  # fmt: skip
    if args.out:
        result.scores.save(args.out)
    if result.top1 is not None:
        top5 = f", top-5 {result.top5:.2%}" if result.top5 is not None else ""
        print(f"test top-1 {result.top1:.2%}{top5} on {result.images} images (standard error "
              f"{100 * result.top1_stderr:.2f} points)")  # fmt: skip
    if args.metric != ACCURACY:
        print(f"{args.metric}: {result.scores.mean:.6g} (standard error {result.scores.stderr:.3g}) on "
              f"{result.images} images")  # fmt: skip
    return result.to_json() | blas_config()  # what it computed with (recorded in the loop's report)
