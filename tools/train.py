#!/usr/bin/env python3
"""Train (or fine-tune) a net with Caffe's solver and save the final caffemodel.

Runs `caffe train` in a child process: a Caffe crash or a NaN loss is reported as a clear
error and nothing is written to --out. Prints the test top-1 (and top-5) afterwards.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pytrim.cli import run
from pytrim.evaluate import evaluate
from pytrim.train import read_solver, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--solver", type=Path, required=True, help="solver prototxt")
    parser.add_argument("--out", type=Path, required=True, help="where to write the trained caffemodel")
    parser.add_argument("--weights", type=Path, help="initial weights (fine-tuning)")
    parser.add_argument("--max-iter", type=int, help="override the solver's max_iter")
    parser.add_argument("--workdir", type=Path, help="solver copy, snapshots and log (default: OUT.train/)")
    parser.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    result = train(
        args.solver,
        args.out,
        weights=args.weights,
        workdir=args.workdir,
        max_iter=args.max_iter,
        progress=not args.quiet,
    )
    print(
        f"trained {result.iterations} iterations in {result.seconds:.1f} s, "
        f"final loss {result.final_loss:.4f}: {result.caffemodel}"
    )
    if not args.no_eval:
        net = read_solver(args.solver).net
        acc = evaluate(net, result.caffemodel, progress=not args.quiet)
        top5 = f", top-5 {acc.top5:.2%}" if acc.top5 is not None else ""
        print(f"test top-1 {acc.top1:.2%}{top5} on {acc.images} images")
    return 0


if __name__ == "__main__":
    run(main)
