"""Score the neurons of some layers with a unit pruning criterion (higher = pruned first).

Criteria: apoz, mean_activation, l1, taylor (activation x gradient from pycaffe's backward
pass), random. Statistics come from one pass over the net's TEST data (--images N).
Writes an .npz of layer -> scores.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.upgrade import current_format
from pytrim.cli.options import add_feed, add_images, add_workers, feed_of, names, workers_of
from pytrim.core.files import together
from pytrim.criteria.scores import UNIT, criterion, unit_scores
from pytrim.stats.layer_data import collect_layer_data

OUTPUTS = {"out": "file"}


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--net", type=Path, required=True, help="train_val (TEST data layer), or deploy with --feed")
    p.add_argument("--weights", type=Path, required=True, help="caffemodel")
    p.add_argument("--criterion", choices=UNIT, required=True)
    p.add_argument("--layers", required=True, help="comma-separated layers")
    add_images(p, "images for the statistics (default: all)")
    p.add_argument("--seed", type=int, default=0, help="random: the seed")
    p.add_argument("--out", type=Path, required=True, help=".npz of layer -> scores")
    add_feed(p)
    add_workers(p)


def execute(args: argparse.Namespace) -> dict[str, Any]:
    net, weights = current_format(args.net, "net"), current_format(args.weights, "weights")
    layers = names(args.layers) or []
    data = collect_layer_data(net, weights, layers, args.images, criterion(args.criterion).needs_taylor,
                              feed=feed_of(args), **workers_of(args))  # fmt: skip
    scores = {name: unit_scores(args.criterion, data[name], seed=args.seed) for name in layers}
    with together([args.out]) as (partial,), partial.open("wb") as handle:
        np.savez(handle, **scores)
    if not args.quiet:
        print(f"{args.criterion} scores of {', '.join(layers)}: {args.out}")
    return {"criterion": args.criterion, "layers": {n: int(s.size) for n, s in scores.items()}}
