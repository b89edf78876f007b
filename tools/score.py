#!/usr/bin/env python3
"""Score the neurons of some layers with a unit pruning criterion (higher = pruned first).

Criteria: apoz, mean_activation, l1, taylor (activation x gradient from pycaffe's backward
pass), random. Statistics come from one pass over the net's TEST data (--limit N images).
Writes an .npz of layer -> scores, and prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pytrim.cli import run
from pytrim.collect import collect_layer_data
from pytrim.criteria import UNIT, unit_scores
from pytrim.upgrade import current_format


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", type=Path, required=True, help="train_val prototxt with a TEST Data layer")
    parser.add_argument("--weights", type=Path, required=True, help="caffemodel")
    parser.add_argument("--criterion", choices=UNIT, required=True)
    parser.add_argument("--layers", required=True, help="comma-separated layers")
    parser.add_argument("--limit", type=int, help="images for the statistics (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="random: the seed")
    parser.add_argument("--out", type=Path, required=True, help=".npz of layer -> scores")
    args = parser.parse_args(argv)
    args.net, args.weights = current_format(args.net, "net"), current_format(args.weights, "weights")
    layers = [name.strip() for name in args.layers.split(",")]
    data = collect_layer_data(args.net, args.weights, layers, limit=args.limit, taylor=args.criterion == "taylor")
    scores = {name: unit_scores(args.criterion, data[name], seed=args.seed) for name in layers}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial.npz")
    np.savez(partial, **scores)
    partial.replace(args.out)
    print(json.dumps({"criterion": args.criterion, "layers": {n: int(s.size) for n, s in scores.items()}}))
    return 0


if __name__ == "__main__":
    run(main)
