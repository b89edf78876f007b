"""Choose the neurons to cut from an APoZ statistics file; write a selection JSON.

Rules per layer: the paper's (APoZ > mean + k*std, --k 1 by default), a fixed --ratio, an
explicit --count, or a width plan --widths conv5_3=390,fc6=1513 (the highest APoZ go);
--min-keep LAYER=N keeps at least N neurons (a layer is never emptied).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pytrim.choose import Rule, choose
from pytrim.cli import add_common, finish, names, parser, per_layer
from pytrim.collect import check_stats_match, load_stats
from pytrim.errors import BadInput
from pytrim.files import check_outputs, write_json


def rule_for(args: argparse.Namespace, name: str) -> Rule:
    """The rule the options give for one layer."""
    min_keep = per_layer(args.min_keep, int).get(name, 1)
    if args.widths:
        plan = per_layer(args.widths.split(","), int)
        if name not in plan:
            raise BadInput(f"--widths gives no width for {name!r}")
        return Rule("keep", keep=plan[name])
    if args.ratio:
        return Rule("ratio", ratio=per_layer(args.ratio).get(name, 0.0), min_keep=min_keep)
    if args.count:
        return Rule("count", count=per_layer(args.count, int).get(name, 0), min_keep=min_keep)
    return Rule("apoz", k=args.k, min_keep=min_keep)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--stats", type=Path, required=True, help="statistics file from tools/collect.py")
    p.add_argument("--layers", required=True, help="comma-separated layers to trim, e.g. conv2,ip1")
    p.add_argument("--out", type=Path, required=True, help="selection JSON to write")
    p.add_argument("--weights", type=Path, help="check that the statistics were measured on this caffemodel")
    rule = p.add_mutually_exclusive_group()
    rule.add_argument("--k", type=float, default=1.0, help="paper's rule: APoZ > mean + k*std (default 1)")
    rule.add_argument("--ratio", nargs="+", metavar="LAYER=R", help="remove this fraction of each layer")
    rule.add_argument("--count", nargs="+", metavar="LAYER=N", help="remove this many neurons of each layer")
    rule.add_argument("--widths", help="width plan: keep exactly N neurons, e.g. conv5_3=390,fc6=1513")
    p.add_argument("--min-keep", nargs="+", metavar="LAYER=N", help="keep at least N neurons")
    add_common(p)
    args = p.parse_args(argv)
    check_outputs({"--stats": args.stats, "--weights": args.weights}, {"--out": args.out})
    stats = load_stats(args.stats)
    if args.weights:
        check_stats_match(stats, args.weights)
    chosen = []
    for name in names(args.layers) or []:
        found = stats.find(name)
        selection = choose(name, found.apoz, rule_for(args, name), found.blocks)
        print(f"{name}: keep {len(selection.keep)} of {selection.width}, remove {len(selection.remove)}")
        chosen.append(selection.to_json())
    write_json(args.out, {"weights_sha256": stats.weights_sha256, "layers": chosen})
    finish(args, {e["layer"]: {"width": e["width"], "kept": e["kept"]} for e in chosen})
    return 0
