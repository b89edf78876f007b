#!/usr/bin/env python3
"""Choose the neurons to cut from an APoZ statistics file; write a selection JSON.

Rules per layer: the paper's (APoZ > mean + k*std, --k 1 by default), a fixed --ratio, an
explicit --count, or a width plan --widths conv5_3=390,fc6=1513 (the highest APoZ go);
--min-keep LAYER=N keeps at least N neurons (a layer is never emptied).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pytrim.choose import Rule, choose
from pytrim.cli import run
from pytrim.collect import check_stats_match, load_stats
from pytrim.protoutil import write_atomic


def per_layer(values: list[str] | None, cast=float) -> dict:
    """Parse LAYER=VALUE items."""
    result = {}
    for item in values or []:
        if "=" not in item:
            raise ValueError(f"expected LAYER=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        result[name.strip()] = cast(value)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stats", type=Path, required=True, help="statistics file from tools/collect.py")
    parser.add_argument("--layers", required=True, help="comma-separated layers to trim, e.g. conv2,ip1")
    parser.add_argument("--out", type=Path, required=True, help="selection JSON to write")
    parser.add_argument("--weights", type=Path, help="check that the statistics were measured on this caffemodel")
    rule = parser.add_mutually_exclusive_group()
    rule.add_argument("--k", type=float, default=1.0, help="paper's rule: APoZ > mean + k*std (default 1)")
    rule.add_argument("--ratio", nargs="+", metavar="LAYER=R", help="remove this fraction of each layer")
    rule.add_argument("--count", nargs="+", metavar="LAYER=N", help="remove this many neurons of each layer")
    rule.add_argument("--widths", help="width plan: keep exactly N neurons, e.g. conv5_3=390,fc6=1513")
    parser.add_argument("--min-keep", nargs="+", metavar="LAYER=N", help="keep at least N neurons")
    args = parser.parse_args(argv)

    stats = load_stats(args.stats)
    if args.weights:
        check_stats_match(stats, args.weights)
    ratios, counts = per_layer(args.ratio), per_layer(args.count, int)
    min_keep = per_layer(args.min_keep, int)
    selections = {}
    for name in [n.strip() for n in args.layers.split(",")]:
        if name not in stats.layers:
            raise ValueError(f"{args.stats} has no statistics for layer {name!r} (has: {', '.join(stats.layers)})")
        if args.widths:
            plan = per_layer(args.widths.split(","), int)
            if name not in plan:
                raise ValueError(f"--widths gives no width for {name!r}")
            layer_rule = Rule("keep", keep=plan[name])
        elif args.ratio:
            layer_rule = Rule("ratio", ratio=ratios.get(name, 0.0), min_keep=min_keep.get(name, 1))
        elif args.count:
            layer_rule = Rule("count", count=counts.get(name, 0), min_keep=min_keep.get(name, 1))
        else:
            layer_rule = Rule("apoz", k=args.k, min_keep=min_keep.get(name, 1))
        selections[name] = choose(name, stats.layers[name].apoz, layer_rule)
        chosen = selections[name]
        print(f"{name}: keep {len(chosen.keep)} of {chosen.width}, remove {len(chosen.remove)}")
    payload = {"weights_sha256": stats.weights_sha256, "layers": [s.to_json() for s in selections.values()]}
    write_atomic(args.out, (json.dumps(payload, indent=1) + "\n").encode())
    return 0


if __name__ == "__main__":
    run(main)
