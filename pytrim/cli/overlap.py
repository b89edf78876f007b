"""Do two samples pick the same neurons? APoZ on the net's TEST data and on a seeded random
sample of the same size from another LMDB (e.g. ImageNet validation vs training images, as
the paper checked), the paper's rule on each, and the overlap of the removed neurons per
layer (common, Jaccard, share of the first choice also in the second).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pytrim.caffeio.upgrade import current_format
from pytrim.cli.options import add_images, finite, names
from pytrim.experiments.overlap import overlap_of


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--net", type=Path, required=True, help="train_val prototxt with a TEST Data layer")
    p.add_argument("--weights", type=Path, required=True, help="caffemodel")
    p.add_argument("--other", type=Path, required=True, help="an LMDB the second sample is drawn from")
    p.add_argument("--layers", required=True, help="comma-separated layers, e.g. conv5_3,fc6")
    add_images(p, "images of each sample (default: all of the TEST data)")
    p.add_argument("--k", type=finite, default=1.0, help="rule mean_std: APoZ > mean + k*std (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random sample of --other (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON")


def execute(args: argparse.Namespace) -> dict[str, Any]:
    net, weights = current_format(args.net, "net"), current_format(args.weights, "weights")
    result = overlap_of(net, weights, args.other, names(args.layers) or [], args.images, args.k, args.seed)
    if args.json:
        print(json.dumps(result, indent=1))
    for name, r in [] if args.json else result.items():
        share = f"(Jaccard {r['jaccard']:.2f}, {r['share_of_a']:.0%} of the first)"
        print(
            f"{name}: {r['removed_a']} vs {r['removed_b']} removed, {r['common']} in common {share}, "
            f"{r['images']} images each"
        )
    return result
