#!/usr/bin/env python3
"""Collect APoZ statistics: run a TEST-phase net over its validation data and count zeros.

Writes an HDF5 file (per layer: apoz, zeros, N, M, mean, std; and the sha256 of the
caffemodel it was measured on), prints the table of mean APoZ per layer and, with
--plots, writes one PNG histogram per layer.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pytrim.cli import run
from pytrim.collect import collect, histograms, save_stats, table
from pytrim.upgrade import current_format


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", type=Path, required=True, help="train_val prototxt with a TEST Data layer")
    parser.add_argument("--weights", type=Path, required=True, help="caffemodel")
    parser.add_argument("--out", type=Path, required=True, help="statistics file to write (HDF5)")
    parser.add_argument("--layers", help="comma-separated layers (default: every trimmable layer)")
    parser.add_argument("--limit", type=int, help="use only the first N images")
    parser.add_argument("--plots", type=Path, help="folder for one APoZ histogram PNG per layer")
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of the table")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    args.net, args.weights = current_format(args.net, "net"), current_format(args.weights, "weights")
    layers = [name.strip() for name in args.layers.split(",")] if args.layers else None
    stats = collect(args.net, args.weights, layers=layers, limit=args.limit, progress=not args.quiet)
    save_stats(stats, args.out)
    if args.plots:
        histograms(stats, args.plots)
    if args.json:
        summary = {
            name: {"mean": s.mean, "std": s.std, "N": s.images, "M": s.positions, "relu": s.relu}
            for name, s in stats.layers.items()
        }
        print(json.dumps({"layers": summary, "seconds": stats.seconds}))
    else:
        print(table(stats))
        print(f"{args.out}: {next(iter(stats.layers.values())).images} images in {stats.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    run(main)
