"""Score the neurons of some layers with a unit pruning criterion (higher = pruned first).

Criteria: apoz, mean_activation, l1, taylor (activation x gradient from pycaffe's backward
pass), random. Statistics come from one pass over the net's TEST data (--limit N images).
Writes an .npz of layer -> scores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pytrim.cli import add_common, add_data, add_workers, feed_of, finish, names, parser
from pytrim.collect import collect_layer_data
from pytrim.criteria import UNIT, unit_scores
from pytrim.files import check_outputs, together
from pytrim.upgrade import current_format


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--net", type=Path, required=True, help="train_val (TEST data layer), or deploy with --data")
    p.add_argument("--weights", type=Path, required=True, help="caffemodel")
    p.add_argument("--criterion", choices=UNIT, required=True)
    p.add_argument("--layers", required=True, help="comma-separated layers")
    p.add_argument("--limit", type=int, help="images for the statistics (default: all)")
    p.add_argument("--seed", type=int, default=0, help="random: the seed")
    p.add_argument("--out", type=Path, required=True, help=".npz of layer -> scores")
    add_data(p)
    add_workers(p)
    add_common(p)
    args = p.parse_args(argv)
    check_outputs({"--net": args.net, "--weights": args.weights}, {"--out": args.out})
    net, weights = current_format(args.net, "net"), current_format(args.weights, "weights")
    layers = names(args.layers) or []
    sharding = {"workers": args.workers, "address": args.ray_address}
    data = collect_layer_data(
        net, weights, layers, args.limit, args.criterion == "taylor", feed=feed_of(args), **sharding
    )
    scores = {name: unit_scores(args.criterion, data[name], seed=args.seed) for name in layers}
    with together([args.out]) as (partial,), partial.open("wb") as handle:
        np.savez(handle, **scores)
    summary = {"criterion": args.criterion, "layers": {n: int(s.size) for n, s in scores.items()}}
    finish(args, summary)
    if not args.quiet:
        print(f"{args.criterion} scores of {', '.join(layers)}: {args.out}")
    return 0
