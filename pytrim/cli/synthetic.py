"""Any net, end to end on filler weights and generated images: collect, choose a fraction of
every trimmable channel group, cut, verify, a few solver iterations.

Writes <out>/report.json: per step its seconds and peak resident memory (`steps`), which
Convolution/InnerProduct layers can be trimmed and why the others cannot (`coverage`), and
the verification (`verify`; with --allow-inexact, `verify_exact_groups` proves the exact
cuts on their own). The net may be a deploy prototxt (Input layer) or a train_val.
"""

from __future__ import annotations

import json
from pathlib import Path

from pytrim.cli import add_common, finish, names, parser
from pytrim.synthetic import Options, run


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--net", type=Path, required=True, help="deploy or train_val prototxt")
    p.add_argument("--out", type=Path, help="output folder (default runs/synthetic/<net file's folder name>)")
    p.add_argument("--fraction", type=float, default=0.25, help="fraction of each group's channels cut (0.25)")
    p.add_argument("--layers", help="comma-separated layers to trim (default: every trimmable group)")
    p.add_argument("--images", type=int, default=8, help="generated images (default 8)")
    p.add_argument("--batch", type=int, default=4, help="batch size (default 4)")
    p.add_argument("--solver-iters", type=int, default=2, help="solver iterations of the trimmed net (default 2)")
    p.add_argument("--solver", type=Path, help="solver to take the learning rate policy from")
    p.add_argument("--allow-inexact", action="store_true", help="also cut through LRN across channels")
    add_common(p)
    args = p.parse_args(argv)
    out = args.out or Path("runs/synthetic") / (args.net.parent.name or args.net.stem)
    opts = Options(args.fraction, args.images, args.batch, args.solver_iters, args.allow_inexact,
                   names(args.layers), args.solver)  # fmt: skip
    report = run(args.net, out, opts, log=(lambda _: None) if args.quiet else print)
    finish(args, report)
    print(json.dumps(report, indent=1))
    return 0
