"""Verify a cut: the trimmed net must equal the original with the removed neurons silenced.

Replays the cut's recipe on the original weights (the trimmed caffemodel must hold exactly
the result), then runs both nets on the same inputs and compares every blob (kept channels
where the blob carries trimmed ones) within --tol relative to the blob's scale. With
--allow-inexact, blobs downstream of a layer that mixes channels (LRN across channels) are
held to --inexact-tol instead and reported apart; the others keep --tol. A check whose
compared blobs carry no signal (constant where a cut group is) fails: it would prove nothing.
Exit 0 if the cut is exact, 1 if not (one `error:` line naming the worst blob).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytrim.caffeio.upgrade import current_format
from pytrim.cli.options import add_feed, add_fold, feed_of, fold_of, positive, tolerance
from pytrim.core.errors import VerifyFailed
from pytrim.surgery.choose import load_selection
from pytrim.surgery.recipe import load_recipe
from pytrim.surgery.verify import INEXACT_TOL, verify


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--net", type=Path, required=True, help="original prototxt (train_val or deploy)")
    p.add_argument("--weights", type=Path, required=True, help="original caffemodel")
    p.add_argument("--trimmed-net", type=Path, required=True, help="trimmed prototxt (same kind)")
    p.add_argument("--trimmed-weights", type=Path, required=True, help="trimmed caffemodel")
    p.add_argument("--selection", type=Path, required=True, help="selection JSON used for the cut")
    p.add_argument("--recipe", type=Path, help="the cut's recipe.json: must be the recipe the selection gives")
    p.add_argument("--exact-tol", type=tolerance, default=1e-5, help="relative tolerance of exact blobs (default 1e-5)")
    p.add_argument(
        "--inexact-tol",
        type=tolerance,
        default=INEXACT_TOL,
        help=f"--allow-inexact: bound on the inexact blobs' relative deviation (default {INEXACT_TOL:g})",
    )
    p.add_argument("--passes", type=positive, default=1, help="forward passes to compare (default 1)")
    p.add_argument(
        "--allow-inexact",
        action="store_true",
        help="groups cut through LRN across channels: bound their deviation instead of requiring 1e-5",
    )
    add_fold(p)
    add_feed(p)


def execute(args: argparse.Namespace) -> dict[str, Any]:
    net, weights = current_format(args.net, "net"), current_format(args.weights, "weights")
    selections = load_selection(args.selection)
    result = verify(net, weights, args.trimmed_net, args.trimmed_weights, selections, args.exact_tol, args.passes, 0,
                    args.allow_inexact, feed_of(args), fold_of(args, weights),
                    load_recipe(args.recipe) if args.recipe else None, args.inexact_tol)  # fmt: skip
    for check in [] if args.quiet else result.checks:
        print(f"{check.blob:<24} max |diff| {check.max_abs_diff:.3g}  relative {check.relative:.3g}"
              f"{'  (inexact)' if check.inexact else ''}")  # fmt: skip
    for problem in result.problems:
        print(f"problem: {problem}")
    print(result.verdict())
    if not result.ok:
        raise VerifyFailed(result.failure())
    return result.to_json()
