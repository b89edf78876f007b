"""Collect APoZ statistics: run a TEST-phase net over its validation data and count zeros.

Writes an HDF5 file (per channel group: apoz, zeros, N, M, mean, std; and the sha256 of the
caffemodel it was measured on), prints the table of mean APoZ per group and, with --plots,
writes one PNG histogram per group into that folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytrim.caffeio.upgrade import current_format
from pytrim.cli.options import add_feed, add_images, add_workers, feed_of, names, workers_of
from pytrim.stats.collect import collect
from pytrim.stats.plots import histograms, table
from pytrim.stats.statsfile import save_stats

OUTPUTS = {"out": "file", "plots": "folder"}


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--net", type=Path, required=True, help="train_val (TEST data layer), or deploy with --feed")
    p.add_argument("--weights", type=Path, required=True, help="caffemodel")
    p.add_argument("--out", type=Path, required=True, help="statistics file to write (HDF5)")
    p.add_argument("--layers", help="comma-separated layers (default: every trimmable layer)")
    add_images(p, "use only the first N images (default: all)")
    p.add_argument("--plots", type=Path, help="folder for one APoZ histogram PNG per layer")
    p.add_argument("--keep-means", action="store_true", help="also keep the means consumers read (for cut --fold-mean)")
    add_feed(p)
    add_workers(p)


def execute(args: argparse.Namespace) -> dict[str, Any]:
    net, weights = current_format(args.net, "net"), current_format(args.weights, "weights")
    stats = collect(net, weights, names(args.layers), args.images, not args.quiet, feed=feed_of(args),
                    means=args.keep_means, **workers_of(args))  # fmt: skip
    save_stats(stats, args.out)
    if args.plots:
        histograms(stats, args.plots)
    print(table(stats))
    print(f"{args.out}: {next(iter(stats.layers.values())).images} images in {stats.seconds:.1f} s")
    summary = {name: {"mean": s.mean, "std": s.std, "N": s.images, "M": s.positions, "relu": s.relu}
               for name, s in stats.layers.items()}  # fmt: skip
    return {"layers": summary, "seconds": stats.seconds}
