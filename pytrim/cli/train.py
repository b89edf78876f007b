"""Train (or fine-tune) a net with Caffe's solver and save the final caffemodel.

Runs `caffe train` in a child process (its solver copy, snapshots and log in --workdir): a
Caffe crash or a NaN loss is reported as a clear error and nothing is written to --out.
Prints the test top-1 (and top-5) afterwards.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytrim.caffeio.proto import read_solver
from pytrim.cli.options import positive
from pytrim.retrain.solver import init_weights, train
from pytrim.stats.evaluate import evaluate

OUTPUTS = {"out": "file", "workdir": "folder"}


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--solver", type=Path, required=True, help="solver prototxt")
    p.add_argument("--out", type=Path, required=True, help="where to write the trained caffemodel")
    p.add_argument("--weights", type=Path, help="initial weights (fine-tuning)")
    p.add_argument("--init", action="store_true", help="from scratch: first save the initial weights as "
                   "OUT.init.caffemodel")  # fmt: skip
    p.add_argument("--net", type=Path, help="train_val prototxt (default: the solver's net)")
    p.add_argument("--iters", type=positive, help="solver iterations (default: the solver's max_iter)")
    p.add_argument("--workdir", type=Path, help="solver copy, snapshots and log (default: OUT.train/)")
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")


def inputs(args: argparse.Namespace) -> dict[str, Path | None]:
    return {"the solver's net": args.net or Path(read_solver(args.solver).net)}


def outputs(args: argparse.Namespace) -> tuple[dict, dict]:
    files = {"the initial weights": args.out.with_suffix(".init.caffemodel")} if args.init else {}
    return files, {} if args.workdir else {"the default --workdir": args.out.with_suffix(".train")}


def execute(args: argparse.Namespace) -> dict[str, Any]:
    net = args.net or Path(read_solver(args.solver).net)
    weights = args.weights
    if args.init and weights is None:
        weights = init_weights(args.solver, args.out.with_suffix(".init.caffemodel"), args.net)
    result = train(args.solver, args.out, weights, args.workdir, args.iters, args.net, not args.quiet)
    print(f"trained {result.iterations} iterations in {result.seconds:.1f} s, loss {result.final_loss:.4f}: {args.out}")
    summary = {"iterations": result.iterations, "final_loss": result.final_loss, "seconds": result.seconds}
    if not args.no_eval:
        accuracy = evaluate(net, result.caffemodel, progress=not args.quiet)
        summary |= accuracy.to_json()
        top5 = f", top-5 {accuracy.top5:.2%}" if accuracy.top5 is not None else ""
        print(f"test top-1 {accuracy.top1:.2%}{top5} on {accuracy.images} images")
    return summary
