"""Choose the neurons to cut from an APoZ statistics file; write a selection JSON.

Rules per layer: mean + k·std of the scores (--k 1 by default: the paper's rule on APoZ), a
fixed --ratio, an explicit --count, or a width plan --widths conv5_3=390,fc6=1513 (the
highest APoZ go); --min-keep LAYER=N keeps at least N neurons (a layer is never emptied);
--round-to N rounds each layer's kept count to a multiple of N.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytrim.cli.options import finite, names, per_layer, positive
from pytrim.core.errors import BadInput
from pytrim.core.files import write_json
from pytrim.stats.statsfile import check_stats_match, load_stats
from pytrim.surgery.choose import Rule, choose

OUTPUTS = {"out": "file"}


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stats", type=Path, required=True, help="statistics file from collect")
    p.add_argument("--layers", required=True, help="comma-separated layers to trim, e.g. conv2,ip1")
    p.add_argument("--out", type=Path, required=True, help="selection JSON to write")
    p.add_argument("--weights", type=Path, help="check that the statistics were measured on this caffemodel")
    rule = p.add_mutually_exclusive_group()
    rule.add_argument("--k", type=finite, default=1.0, help="rule mean_std: score > mean + k*std (default 1)")
    rule.add_argument("--ratio", metavar="LAYER=R,...", help="remove this fraction of each layer")
    rule.add_argument("--count", metavar="LAYER=N,...", help="remove this many neurons of each layer")
    rule.add_argument("--widths", metavar="LAYER=N,...", help="width plan: keep exactly N neurons, e.g. conv5_3=390")
    p.add_argument("--min-keep", metavar="LAYER=N,...", help="keep at least N neurons")
    p.add_argument("--round-to", type=positive, default=1, help="round kept counts to a multiple of N (default 1)")


def rules(args: argparse.Namespace, layers: list[str]) -> dict[str, Rule]:
    """The rule of each layer; per-layer options must name layers of --layers."""
    given = {option: per_layer(getattr(args, option), int if option != "ratio" else float, f"--{option}")
             for option in ("ratio", "count", "widths", "min_keep")}  # fmt: skip
    for option, values in given.items():
        unknown = sorted(set(values) - set(layers))
        if unknown:
            raise BadInput(f"--{option.replace('_', '-')} names {', '.join(unknown)}, not in --layers")
    out = {}
    for name in layers:
        keep = given["min_keep"].get(name, 1)
        if args.widths:
            if name not in given["widths"]:
                raise BadInput(f"--widths gives no width for {name!r}")
            out[name] = Rule("keep", keep=given["widths"][name], round_to=args.round_to)
        elif args.ratio:
            out[name] = Rule("ratio", ratio=given["ratio"].get(name, 0.0), min_keep=keep, round_to=args.round_to)
        elif args.count:
            out[name] = Rule("count", count=given["count"].get(name, 0), min_keep=keep, round_to=args.round_to)
        else:
            out[name] = Rule("mean_std", k=args.k, min_keep=keep, round_to=args.round_to)
    return out


def execute(args: argparse.Namespace) -> dict[str, Any]:
    stats = load_stats(args.stats)
    if args.weights:
        check_stats_match(stats, args.weights)
    layers = names(args.layers) or []
    chosen = []
    for name, rule in rules(args, layers).items():
        found = stats.find(name)
        selection = choose(name, found.apoz, rule, found.blocks, found.parts)
        print(f"{name}: keep {len(selection.keep)} of {selection.width}, remove {len(selection.remove)}")
        chosen.append(selection.to_json())
    write_json(args.out, {"weights_sha256": stats.weights_sha256, "layers": chosen})
    return {e["layer"]: {"width": e["width"], "kept": e["kept"]} for e in chosen}
