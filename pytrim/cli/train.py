"""Train (or fine-tune) a net with Caffe's solver and save the final caffemodel.

Runs `caffe train` in a child process: a Caffe crash or a NaN loss is reported as a clear
error and nothing is written to --out. Prints the test top-1 (and top-5) afterwards.
"""

from __future__ import annotations

from pathlib import Path

from pytrim.cli import add_common, finish, parser
from pytrim.evaluate import evaluate
from pytrim.files import check_outputs
from pytrim.protoutil import read_solver
from pytrim.train import init_weights, train


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--solver", type=Path, required=True, help="solver prototxt")
    p.add_argument("--out", type=Path, required=True, help="where to write the trained caffemodel")
    p.add_argument("--weights", type=Path, help="initial weights (fine-tuning)")
    p.add_argument(
        "--init", action="store_true", help="from scratch: first save the initial weights as OUT.init.caffemodel"
    )
    p.add_argument("--net", type=Path, help="train_val prototxt (default: the solver's net)")
    p.add_argument("--max-iter", type=int, help="override the solver's max_iter")
    p.add_argument("--workdir", type=Path, help="solver copy, snapshots and log (default: OUT.train/)")
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    add_common(p)
    args = p.parse_args(argv)
    net = args.net or Path(read_solver(args.solver).net)
    inputs = {"--solver": args.solver, "--weights": args.weights, "the solver's net": net}
    check_outputs(inputs, {"--out": args.out, "--workdir": args.workdir or args.out.with_suffix(".train")})
    weights = args.weights
    if args.init and weights is None:
        weights = init_weights(args.solver, args.out.with_suffix(".init.caffemodel"), args.net)
    result = train(args.solver, args.out, weights, args.workdir, args.max_iter, args.net, not args.quiet)
    print(f"trained {result.iterations} iterations in {result.seconds:.1f} s, loss {result.final_loss:.4f}: {args.out}")
    summary = {"iterations": result.iterations, "final_loss": result.final_loss, "seconds": result.seconds}
    if not args.no_eval:
        accuracy = evaluate(net, result.caffemodel, progress=not args.quiet)
        summary |= accuracy.to_json()
        top5 = f", top-5 {accuracy.top5:.2%}" if accuracy.top5 is not None else ""
        print(f"test top-1 {accuracy.top1:.2%}{top5} on {accuracy.images} images")
    finish(args, summary)
    return 0
