"""Retrain a net whose pruned connections must stay zero: Caffe's own solver, stepped from
pycaffe one iteration at a time, with the masks re-applied to the weights after every step
(Caffe has no masked layer). Masks: an .npz of layer -> boolean array of the weight's shape
(True = keep). A NaN/infinite loss stops the run; --out is written only at the end.
"""

from __future__ import annotations

from pathlib import Path

from pytrim.cli import add_common, finish, parser
from pytrim.files import check_outputs
from pytrim.masked import load_masks, train_masked


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--solver", type=Path, required=True, help="solver prototxt")
    p.add_argument("--net", type=Path, help="train_val prototxt (default: the solver's net)")
    p.add_argument("--weights", type=Path, required=True, help="initial caffemodel")
    p.add_argument("--masks", type=Path, required=True, help=".npz of layer -> keep mask")
    p.add_argument("--max-iter", type=int, help="solver iterations (default: the solver's max_iter)")
    p.add_argument("--out", type=Path, required=True, help="caffemodel to write")
    add_common(p)
    args = p.parse_args(argv)
    inputs = {"--solver": args.solver, "--net": args.net, "--weights": args.weights, "--masks": args.masks}
    check_outputs(inputs, {"--out": args.out})
    result = train_masked(
        args.solver, args.weights, load_masks(args.masks), args.out, args.net, args.max_iter, not args.quiet
    )
    finish(args, result)
    print(f"trained {result['iterations']} iterations with {result['kept']:,} masked-layer weights kept: {args.out}")
    return 0
