"""Collect APoZ statistics: run a TEST-phase net over its validation data and count zeros.

Writes an HDF5 file (per layer: apoz, zeros, N, M, mean, std; and the sha256 of the
caffemodel it was measured on), prints the table of mean APoZ per layer and, with
--plots, writes one PNG histogram per layer.
"""

from __future__ import annotations

from pathlib import Path

from pytrim.cli import add_common, add_data, add_workers, feed_of, finish, names, parser
from pytrim.collect import collect, histograms, save_stats, table
from pytrim.files import check_outputs
from pytrim.upgrade import current_format


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--net", type=Path, required=True, help="train_val (TEST data layer), or deploy with --data")
    p.add_argument("--weights", type=Path, required=True, help="caffemodel")
    p.add_argument("--out", type=Path, required=True, help="statistics file to write (HDF5)")
    p.add_argument("--layers", help="comma-separated layers (default: every trimmable layer)")
    p.add_argument("--limit", type=int, help="use only the first N images")
    p.add_argument("--plots", type=Path, help="folder for one APoZ histogram PNG per layer")
    p.add_argument("--means", action="store_true", help="also keep the means consumers read (for cut --fold-mean)")
    add_data(p)
    add_workers(p)
    add_common(p)
    args = p.parse_args(argv)
    check_outputs({"--net": args.net, "--weights": args.weights}, {"--out": args.out, "--plots": args.plots})
    net, weights = current_format(args.net, "net"), current_format(args.weights, "weights")
    feed, sharding = feed_of(args), {"workers": args.workers, "address": args.ray_address}
    stats = collect(
        net, weights, names(args.layers), args.limit, not args.quiet, feed=feed, means=args.means, **sharding
    )
    save_stats(stats, args.out)
    if args.plots:
        histograms(stats, args.plots)
    summary = {
        name: {"mean": s.mean, "std": s.std, "N": s.images, "M": s.positions, "relu": s.relu}
        for name, s in stats.layers.items()
    }
    finish(args, {"layers": summary, "seconds": stats.seconds})
    print(table(stats))
    print(f"{args.out}: {next(iter(stats.layers.values())).images} images in {stats.seconds:.1f} s")
    return 0
