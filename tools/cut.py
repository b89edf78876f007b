#!/usr/bin/env python3
"""Cut the selected neurons out of a net: new train_val/deploy prototxts and caffemodel.

Only num_output of trimmed layers changes in the prototxts; every consumer of a trimmed
layer loses the matching inputs (conv->conv, conv->pool->fc, fc->fc). Unsupported topology
(Eltwise, Concat, BatchNorm/Scale, LRN, grouped convolution) is refused before anything is
written. With --verify the result is checked against the masked original net.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pytrim.choose import load_selection
from pytrim.cli import run
from pytrim.cut import cut
from pytrim.upgrade import current_format


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", type=Path, required=True, help="train_val prototxt (the topology)")
    parser.add_argument("--deploy", type=Path, help="deploy prototxt to rewrite too")
    parser.add_argument("--weights", type=Path, required=True, help="caffemodel to cut")
    parser.add_argument("--selection", type=Path, required=True, help="selection JSON from tools/choose.py")
    parser.add_argument(
        "--out-dir",
        type=Path,
        required=True,
        help="writes train_val.prototxt, [deploy.prototxt,] trimmed.caffemodel there",
    )
    parser.add_argument("--verify", action="store_true", help="verify the cut (exits 1 if it fails)")
    args = parser.parse_args(argv)
    args.net, args.deploy = current_format(args.net, "net"), current_format(args.deploy, "net")
    args.weights = current_format(args.weights, "weights")
    selections = load_selection(args.selection, weights=args.weights)
    nets = [args.net] + ([args.deploy] if args.deploy else [])
    outs = [args.out_dir / "train_val.prototxt"] + ([args.out_dir / "deploy.prototxt"] if args.deploy else [])
    result = cut(nets, args.weights, selections, outs, args.out_dir / "trimmed.caffemodel")
    for name in result.widths_before:
        print(f"{name}: {result.widths_before[name]} -> {result.widths_after[name]}")
    print(
        f"parameters {result.params_before:,} -> {result.params_after:,} "
        f"({result.params_before / result.params_after:.2f}x): {result.weights}"
    )
    if args.verify:
        from pytrim.verify import verify

        check = verify(args.net, args.weights, outs[0], result.weights, selections)
        print(json.dumps({"verify": check.ok, "max_relative_diff": check.max_relative}))
        if not check.ok:
            print(
                "error: verification failed: " + "; ".join(check.problems or ["differences above tolerance"]),
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    run(main)
