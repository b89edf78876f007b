"""Verify a cut: the trimmed net must equal the original with the removed neurons silenced.

Runs both nets on the same inputs and compares every blob (kept channels where the blob
carries trimmed ones) within --tol relative to the blob's scale. Exit 0 if the cut is
exact, 1 if not (one `error:` line naming the worst blob).
"""

from __future__ import annotations

from pathlib import Path

from pytrim.choose import load_selection
from pytrim.cli import add_common, add_data, add_fold, feed_of, finish, fold_of, parser
from pytrim.errors import StepFailed
from pytrim.upgrade import current_format
from pytrim.verify import verify


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--net", type=Path, required=True, help="original prototxt (train_val or deploy)")
    p.add_argument("--weights", type=Path, required=True, help="original caffemodel")
    p.add_argument("--trimmed-net", type=Path, required=True, help="trimmed prototxt (same kind)")
    p.add_argument("--trimmed-weights", type=Path, required=True, help="trimmed caffemodel")
    p.add_argument("--selection", type=Path, required=True, help="selection JSON used for the cut")
    p.add_argument("--tol", type=float, default=1e-5, help="relative tolerance (default 1e-5)")
    p.add_argument("--batches", type=int, default=1, help="forward passes to compare (default 1)")
    p.add_argument(
        "--allow-inexact", action="store_true", help="a cut through LRN across channels: report the deviation"
    )
    add_fold(p)
    add_data(p)
    add_common(p)
    args = p.parse_args(argv)
    net, weights = current_format(args.net, "net"), current_format(args.weights, "weights")
    selections = load_selection(args.selection)
    result = verify(
        net,
        weights,
        args.trimmed_net,
        args.trimmed_weights,
        selections,
        args.tol,
        args.batches,
        0,
        args.allow_inexact,
        feed_of(args),
        fold_of(args),
    )
    finish(args, result.to_json())
    for check in [] if args.quiet else result.checks:
        print(f"{check.blob:<24} max |diff| {check.max_abs_diff:.3g}  relative {check.relative:.3g}")
    for problem in result.problems:
        print(f"problem: {problem}")
    verdict = "OK" if result.ok else "FAILED"
    if result.inexact:
        verdict += " (inexact by permission: " + "; ".join(result.inexact) + ")"
    print(f"verify: {verdict} (max relative difference {result.max_relative:.3g}, tolerance {result.tol:g})")
    if not result.ok:
        worst = max(result.checks, key=lambda c: c.relative, default=None)
        detail = result.problems[0] if result.problems else f"blob {worst.blob!r} differs by {worst.relative:.3g}"
        raise StepFailed(f"verification failed: {detail} (tolerance {result.tol:g})")
    return 0
