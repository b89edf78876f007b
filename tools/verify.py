#!/usr/bin/env python3
"""Verify a cut: the trimmed net must equal the original with the removed neurons silenced.

Runs both nets on the same inputs and compares every blob (kept channels where the blob
carries trimmed ones) within --tol relative to the blob's scale. Exit 0 if the cut is
exact, 1 if not; --json prints the per-blob differences.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pytrim.choose import load_selection
from pytrim.cli import run
from pytrim.upgrade import current_format
from pytrim.verify import verify


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", type=Path, required=True, help="original prototxt (train_val or deploy)")
    parser.add_argument("--weights", type=Path, required=True, help="original caffemodel")
    parser.add_argument("--trimmed-net", type=Path, required=True, help="trimmed prototxt (same kind)")
    parser.add_argument("--trimmed-weights", type=Path, required=True, help="trimmed caffemodel")
    parser.add_argument("--selection", type=Path, required=True, help="selection JSON used for the cut")
    parser.add_argument("--tol", type=float, default=1e-5, help="relative tolerance (default 1e-5)")
    parser.add_argument("--batches", type=int, default=1, help="forward passes to compare (default 1)")
    parser.add_argument("--json", action="store_true", help="print the per-blob result as JSON")
    args = parser.parse_args(argv)
    args.net, args.weights = current_format(args.net, "net"), current_format(args.weights, "weights")
    selections = load_selection(args.selection)
    result = verify(
        args.net, args.weights, args.trimmed_net, args.trimmed_weights, selections, tol=args.tol, batches=args.batches
    )
    if args.json:
        print(json.dumps(result.to_json(), indent=1))
    else:
        for check in result.checks:
            print(f"{check.blob:<24} max |diff| {check.max_abs_diff:.3g}  relative {check.relative:.3g}")
        for problem in result.problems:
            print(f"problem: {problem}")
        print(
            f"verify: {'OK' if result.ok else 'FAILED'} (max relative difference {result.max_relative:.3g}, "
            f"tolerance {result.tol:g})"
        )
    return 0 if result.ok else 1


if __name__ == "__main__":
    run(main)
