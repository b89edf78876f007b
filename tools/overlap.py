#!/usr/bin/env python3
"""Do two samples pick the same neurons? APoZ on the net's TEST data and on another LMDB
(e.g. ImageNet validation vs a same-size training sample, as the paper checked), the
paper's rule on each, and the overlap of the removed neurons per layer (common, Jaccard,
share of the first choice also in the second).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from pytrim.choose import Rule, choose, overlap
from pytrim.cli import run
from pytrim.collect import collect
from pytrim.evaluate import find_test_data
from pytrim.protoutil import read_net, write_text
from pytrim.upgrade import current_format


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", type=Path, required=True, help="train_val prototxt with a TEST Data layer")
    parser.add_argument("--weights", type=Path, required=True, help="caffemodel")
    parser.add_argument("--other", type=Path, required=True, help="the second sample: an LMDB folder")
    parser.add_argument("--layers", required=True, help="comma-separated layers, e.g. conv5_3,fc6")
    parser.add_argument("--limit", type=int, help="images of each sample (default: all of the TEST data)")
    parser.add_argument("--k", type=float, default=1.0, help="rule: APoZ > mean + k*std (default 1)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    args.net, args.weights = current_format(args.net, "net"), current_format(args.weights, "weights")
    layers = [name.strip() for name in args.layers.split(",")]
    net = read_net(args.net)
    data_layer, _, _ = find_test_data(net)
    first = collect(args.net, args.weights, layers=layers, limit=args.limit, progress=False)
    data_layer.data_param.source = str(args.other)
    with tempfile.TemporaryDirectory() as tmp:
        other_net = write_text(net, Path(tmp) / "other.prototxt")
        second = collect(other_net, args.weights, layers=layers, limit=first.layers[layers[0]].images, progress=False)
    result = {}
    for name in layers:
        a = choose(name, first.layers[name].apoz, Rule("apoz", k=args.k))
        b = choose(name, second.layers[name].apoz, Rule("apoz", k=args.k))
        result[name] = overlap(a, b) | {"images": first.layers[name].images}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for name, r in result.items():
            print(
                f"{name}: {r['removed_a']} vs {r['removed_b']} removed, {r['common']} in common "
                f"(Jaccard {r['jaccard']:.2f}, {r['share_of_a']:.0%} of the first), {r['images']} images each"
            )
    return 0


if __name__ == "__main__":
    run(main)
