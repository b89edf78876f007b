"""Write a public model-zoo net as prototxt, generated with pycaffe's NetSpec
(pytrim/caffeio/zoo.py), or one of pytrim's Fashion-MNIST benchmark nets
(pytrim/caffeio/benchnets.py: resnet_fm, seresnet_fm, mobilenet_fm, squeezenet_fm, densenet_fm).

The zoo nets keep their published layer names, blob names and shapes, so that pytrim can be
tried on them with filler weights (or on the published caffemodels).

python -m pytrim zoo --list
python -m pytrim zoo --nets resnet50 --out prototxt/resnet50 [--kind train_val,deploy] [--batch N]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytrim.caffeio import benchnets
from pytrim.caffeio.zoo import INPUTS, KINDS, NETS, published_params, write
from pytrim.cli.options import names, positive
from pytrim.core.errors import BadInput

OUTPUTS = {"out": "place"}


def listing() -> str:
    """One line per net: name, input side, learnable parameters, where its published definition is."""
    lines = []
    for name, info in INPUTS.items():
        params = f"{published_params[name]:,}" if name in published_params else "?"
        side = f"{info.size}x{info.size}"
        lines.append(f"{name:<15} {side:>7} {params:>11} params  {info.origin}")
    lines += [f"{name:<15} {'28x28':>7} {'':>11}         {title}" for name, title in benchnets.TITLES.items()]
    return "\n".join(lines)


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--list", action="store_true", help="list the nets and exit")
    p.add_argument("--nets", help=f"the net to write: one of {', '.join([*NETS, *benchnets.NETS])}")
    p.add_argument("--out", type=Path, help="folder for <kind>.prototxt")
    p.add_argument("--kind", default=",".join(KINDS), help="train_val, deploy or both (default train_val,deploy)")
    p.add_argument("--batch", type=positive, default=1, help="deploy input batch (default 1)")
    p.add_argument("--train-batch", type=positive, help="TRAIN batch of train_val (default: the published one)")
    p.add_argument("--test-batch", type=positive, default=50, help="TEST batch of train_val (default 50)")
    p.add_argument("--train-source", help="TRAIN LMDB (default data/<dataset>/train_lmdb)")
    p.add_argument("--test-source", help="TEST LMDB (default data/<dataset>/val_lmdb)")
    p.add_argument("--aux", action="store_true", help="googlenet train_val: with the auxiliary classifiers")


def kinds_of(args: argparse.Namespace) -> list[str]:
    kinds = names(args.kind) or []
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise BadInput(f"--kind: {', '.join(unknown) or 'nothing given'}: expected {' and/or '.join(KINDS)}")
    return kinds


def outputs(args: argparse.Namespace) -> tuple[dict, dict]:
    if args.list or args.out is None:
        return {}, {}
    return {f"--out {kind}.prototxt": args.out / f"{kind}.prototxt" for kind in kinds_of(args)}, {}


def execute(args: argparse.Namespace) -> dict[str, Any]:
    if args.list:
        print(listing())
        return {"nets": list(NETS)}
    chosen = names(args.nets) or []
    if len(chosen) != 1 or args.out is None:
        raise BadInput("give one net with --nets NAME and a folder with --out (or --list)")
    if chosen[0] in benchnets.NETS:
        paths = benchnets.write(chosen[0], args.out, kinds_of(args))
        print("\n".join(f"wrote {path}" for path in paths))
        return {"written": [str(p) for p in paths]}
    if chosen[0] not in NETS:
        raise BadInput(f"unknown net {chosen[0]!r}: one of {', '.join([*NETS, *benchnets.NETS])}")
    if args.aux and chosen[0] != "googlenet":
        raise BadInput("--aux is for --nets googlenet")
    paths = write(chosen[0], args.out, kinds_of(args), batch=args.batch, train_batch=args.train_batch,
                  test_batch=args.test_batch, train_source=args.train_source, test_source=args.test_source,
                  **({"aux": True} if args.aux else {}))  # fmt: skip
    for path in paths:
        print(f"wrote {path}")
    return {"written": [str(p) for p in paths]}
