"""Two caffemodels side by side on the same data (e.g. the published VGG-16 vs a trimmed one).

For each: top-1 and top-5 over the TEST data of its train_val prototxt (every image once,
or the first --limit), parameters, FLOPs per image (2 per multiply-add, Convolution and
InnerProduct layers), caffemodel file size, and forward time per image (best of 3 batches).
Old-format (V0/V1) files are upgraded first.
"""

from __future__ import annotations

import json
from pathlib import Path

from pytrim.cli import add_common, finish, parser
from pytrim.measure import measure_model
from pytrim.upgrade import current_format


def table(a: dict, b: dict, names: tuple[str, str]) -> str:
    def pct(value: float | None) -> str:
        return f"{value:.2%}" if value is not None else "-"

    rows = [
        ("top-1", pct(a["top1"]), pct(b["top1"])),
        ("top-5", pct(a["top5"]), pct(b["top5"])),
        ("images", str(a["images"]), str(b["images"])),
        ("parameters", f"{a['params']:,}", f"{b['params']:,}  ({a['params'] / b['params']:.2f}x fewer)"),
        ("FLOPs/image", f"{a['flops']:,}", f"{b['flops']:,}  ({a['flops'] / b['flops']:.2f}x fewer)"),
        ("file size", f"{a['file_mb']:.1f} MB", f"{b['file_mb']:.1f} MB"),
        ("forward/image", f"{a['ms_per_image']:.2f} ms", f"{b['ms_per_image']:.2f} ms"),
    ]
    lines = [f"{'':<14} {names[0]:>26} {names[1]:>26}"]
    return "\n".join(lines + [f"{name:<14} {x:>26} {y:>26}" for name, x, y in rows])


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--net", type=Path, required=True, help="train_val prototxt of the first model")
    p.add_argument("--weights", type=Path, required=True, help="first caffemodel")
    p.add_argument("--net2", type=Path, help="train_val prototxt of the second model (default: --net)")
    p.add_argument("--weights2", type=Path, required=True, help="second caffemodel")
    p.add_argument("--limit", type=int, help="evaluate only the first N images")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    add_common(p)
    args = p.parse_args(argv)
    a = measure_model(current_format(args.net, "net"), current_format(args.weights, "weights"), args.limit)
    b = measure_model(
        current_format(args.net2 or args.net, "net"), current_format(args.weights2, "weights"), args.limit
    )
    finish(args, {"a": a, "b": b})
    print(json.dumps({"a": a, "b": b}, indent=1) if args.json else table(a, b, (args.weights.name, args.weights2.name)))
    return 0
