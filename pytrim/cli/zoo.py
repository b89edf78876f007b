"""Write a public model-zoo net as prototxt, generated with pycaffe's NetSpec (pytrim/zoo.py).

The nets keep their published layer names, blob names and shapes, so that pytrim can be tried
on them with filler weights (or on the published caffemodels).

python -m pytrim zoo --list
python -m pytrim zoo --net resnet50 --out-dir prototxt/resnet50 [--kind train_val,deploy] [--batch N]
"""

from __future__ import annotations

from pytrim.cli import parser as make_parser
from pytrim.zoo import INPUTS, KINDS, NETS, published_params, write


def listing() -> str:
    """One line per net: name, input side, learnable parameters, where its published definition is."""
    lines = []
    for name, info in INPUTS.items():
        params = f"{published_params[name]:,}" if name in published_params else "?"
        side = f"{info.size}x{info.size}"
        lines.append(f"{name:<13} {side:>7} {params:>11} params  {info.origin}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--list", action="store_true", help="list the nets and exit")
    parser.add_argument("--net", choices=sorted(NETS), help="the net to write")
    parser.add_argument("--out-dir", help="folder for <kind>.prototxt")
    parser.add_argument("--kind", default=",".join(KINDS), help="train_val, deploy or both (default train_val,deploy)")
    parser.add_argument("--batch", type=int, default=1, help="deploy input batch (default 1)")
    parser.add_argument("--train-batch", type=int, help="TRAIN batch of train_val (default: the published one)")
    parser.add_argument("--test-batch", type=int, default=50, help="TEST batch of train_val (default 50)")
    parser.add_argument("--train-source", help="TRAIN LMDB (default data/<dataset>/train_lmdb)")
    parser.add_argument("--test-source", help="TEST LMDB (default data/<dataset>/val_lmdb)")
    parser.add_argument("--aux", action="store_true", help="googlenet train_val: with the auxiliary classifiers")
    args = parser.parse_args(argv)
    if args.list:
        print(listing())
        return 0
    if not args.net or not args.out_dir:
        parser.error("--net and --out-dir are required (or --list)")
    kinds = [k.strip() for k in args.kind.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        parser.error(f"--kind: {', '.join(unknown) or 'nothing given'}: expected {' and/or '.join(KINDS)}")
    if min(args.batch, args.test_batch, args.train_batch or 1) < 1:
        parser.error("batch sizes must be at least 1")
    if args.aux and args.net != "googlenet":
        parser.error("--aux is for --net googlenet")
    options = {"aux": True} if args.aux else {}
    paths = write(
        args.net,
        args.out_dir,
        kinds,
        batch=args.batch,
        train_batch=args.train_batch,
        test_batch=args.test_batch,
        train_source=args.train_source,
        test_source=args.test_source,
        **options,
    )
    for path in paths:
        print(f"wrote {path}")
    return 0
