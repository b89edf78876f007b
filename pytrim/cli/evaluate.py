"""Top-1 (and top-5) of a caffemodel on the TEST data of its train_val prototxt.

Every image of the TEST Data layer's LMDB is scored exactly once (Caffe's own `caffe test`
wraps around and counts some twice). Old-format (V0/V1) files are upgraded first.
"""

from __future__ import annotations

from pathlib import Path

from pytrim.cli import add_common, add_data, add_workers, feed_of, finish, parser
from pytrim.evaluate import evaluate
from pytrim.upgrade import current_format


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--net", type=Path, required=True, help="train_val (TEST data layer), or deploy with --data")
    p.add_argument("--weights", type=Path, required=True, help="caffemodel")
    p.add_argument("--limit", type=int, help="score only the first N images")
    add_data(p)
    add_workers(p)
    add_common(p)
    args = p.parse_args(argv)
    net, weights = current_format(args.net, "net"), current_format(args.weights, "weights")
    sharding = {"workers": args.workers, "address": args.ray_address}
    accuracy = evaluate(net, weights, limit=args.limit, progress=not args.quiet, feed=feed_of(args), **sharding)
    finish(args, accuracy.to_json())
    top5 = f", top-5 {accuracy.top5:.2%}" if accuracy.top5 is not None else ""
    stderr = f" (standard error {100 * accuracy.top1_stderr:.2f} points)"
    print(f"test top-1 {accuracy.top1:.2%}{top5} on {accuracy.images} images{stderr}")
    return 0
