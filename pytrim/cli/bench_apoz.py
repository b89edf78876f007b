"""Benchmark: APoZ statistics collection vs a bare forward pass, same net, same images.

Both run on the same Net over the same TEST images: forward() alone, and forward() with the
zero counting that `collect` does, interleaved --repeats times after a warm-up. Prints and
writes to --out {"ratio": median of the per-pair ratios collect/forward, "spread": their
interquartile range, ...}.
"""

from __future__ import annotations

from pathlib import Path

from pytrim.bench import apoz_overhead
from pytrim.cli import add_common, finish, parser
from pytrim.files import write_json
from pytrim.upgrade import current_format


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--net", type=Path, required=True, help="train_val prototxt with a TEST Data layer")
    p.add_argument("--weights", type=Path, required=True, help="caffemodel")
    p.add_argument("--images", type=int, default=5000, help="TEST images per timing (default 5000)")
    p.add_argument("--repeats", type=int, default=15, help="interleaved pairs of timings (default 15)")
    p.add_argument("--out", type=Path, default=Path("runs/bench/apoz_overhead.json"))
    add_common(p)
    args = p.parse_args(argv)
    net, weights = current_format(args.net, "net"), current_format(args.weights, "weights")
    result = apoz_overhead(net, weights, args.images, args.repeats)
    write_json(args.out, result)
    finish(args, result)
    rate = result["images"] / result["forward_seconds"], result["images"] / result["collect_seconds"]
    print(
        f"bare forward: {rate[0]:.0f} images/s; with APoZ counting: {rate[1]:.0f} images/s; ratio "
        f"{result['ratio']:.3f} (interquartile spread {result['spread']:.3f}, {args.repeats} pairs): {args.out}"
    )
    return 0
