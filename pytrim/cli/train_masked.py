"""Retrain a net whose pruned connections must stay zero: Caffe's own solver, stepped from
pycaffe one iteration at a time, with the masks re-applied to the weights after every step
(Caffe has no masked layer). Masks: an .npz of layer -> boolean array of the weight's shape
(True = keep). A NaN/infinite loss stops the run; --out is written only at the end.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytrim.cli.options import positive
from pytrim.retrain.masked import load_masks, train_masked

OUTPUTS = {"out": "file"}


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--solver", type=Path, required=True, help="solver prototxt")
    p.add_argument("--net", type=Path, help="train_val prototxt (default: the solver's net)")
    p.add_argument("--weights", type=Path, required=True, help="initial caffemodel")
    p.add_argument("--masks", type=Path, required=True, help=".npz of layer -> keep mask")
    p.add_argument("--finetune-iters", type=positive, help="solver iterations (default: the solver's max_iter)")
    p.add_argument("--out", type=Path, required=True, help="caffemodel to write")


def execute(args: argparse.Namespace) -> dict[str, Any]:
    result = train_masked(args.solver, args.weights, load_masks(args.masks), args.out, args.net,
                          args.finetune_iters, not args.quiet)  # fmt: skip
    print(f"trained {result['iterations']} iterations with {result['kept']:,} masked-layer weights kept: {args.out}")
    return result
