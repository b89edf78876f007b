"""Do two samples pick the same neurons? APoZ on the net's TEST data and on a seeded random
sample of the same size from another LMDB (e.g. ImageNet validation vs training images, as
the paper checked), the paper's rule on each, and the overlap of the removed neurons per
layer (common, Jaccard, share of the first choice also in the second).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from pytrim.choose import Rule, choose, overlap
from pytrim.cli import add_common, finish, names, parser
from pytrim.collect import collect
from pytrim.datasets import sample_lmdb
from pytrim.protoutil import with_test_data
from pytrim.upgrade import current_format


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--net", type=Path, required=True, help="train_val prototxt with a TEST Data layer")
    p.add_argument("--weights", type=Path, required=True, help="caffemodel")
    p.add_argument("--other", type=Path, required=True, help="an LMDB the second sample is drawn from")
    p.add_argument("--layers", required=True, help="comma-separated layers, e.g. conv5_3,fc6")
    p.add_argument("--limit", type=int, help="images of each sample (default: all of the TEST data)")
    p.add_argument("--k", type=float, default=1.0, help="rule: APoZ > mean + k*std (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random sample of --other (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_common(p)
    args = p.parse_args(argv)
    net, weights = current_format(args.net, "net"), current_format(args.weights, "weights")
    layers = names(args.layers) or []
    first = collect(net, weights, layers=layers, limit=args.limit, progress=False)
    images = first.layers[layers[0]].images
    with tempfile.TemporaryDirectory() as tmp:
        other = sample_lmdb(args.other, Path(tmp) / "sample_lmdb", images, args.seed)
        second = collect(with_test_data(net, other, Path(tmp) / "other.prototxt"), weights, layers, images, False)
    result = {}
    for name in layers:
        a = choose(name, first.layers[name].apoz, Rule("apoz", k=args.k))
        b = choose(name, second.layers[name].apoz, Rule("apoz", k=args.k))
        result[name] = overlap(a, b) | {"images": images}
    finish(args, result)
    for name, r in result.items():
        if not args.json:
            print(
                f"{name}: {r['removed_a']} vs {r['removed_b']} removed, {r['common']} in common "
                f"(Jaccard {r['jaccard']:.2f}, {r['share_of_a']:.0%} of the first), {r['images']} images each"
            )
    if args.json:
        print(json.dumps(result, indent=1))
    return 0
