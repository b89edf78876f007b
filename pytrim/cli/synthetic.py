"""Any net, end to end on non-degenerate random weights and generated inputs: collect, choose
a fraction of every trimmable channel group, cut, verify, a few solver iterations.

Writes <out>/report.json: per step its seconds and peak resident memory (`steps`), which
Convolution/InnerProduct layers can be trimmed and why the others cannot (`coverage`), the
verification (`verify`; with --allow-inexact, `verify_exact_groups` proves the exact cuts on
their own), and the cut net's parameters, MACs and forward-time ratios (`cost`). The net may
be a deploy prototxt (Input or MemoryData layers, any names) or a train_val.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pytrim.cli.options import names, positive
from pytrim.core.errors import BadInput
from pytrim.experiments.synthetic import Options, run

OUTPUTS = {"out": "folder"}


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a fraction in (0, 1)")
    return value


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--net", type=Path, required=True, help="deploy or train_val prototxt")
    p.add_argument("--out", type=Path, help="output folder (default runs/synthetic/<net file's folder name>)")
    p.add_argument("--fraction", type=fraction, default=0.25, help="fraction of each group's channels cut (0.25)")
    p.add_argument("--layers", help="comma-separated layers to trim (default: every trimmable group)")
    p.add_argument("--images", type=positive, default=8, help="generated images (default 8)")
    p.add_argument("--batch", type=positive, default=4, help="batch size (default 4)")
    p.add_argument("--finetune-iters", type=positive, default=2, help="solver iterations of the cut net (default 2)")
    p.add_argument("--solver", type=Path, help="solver to take the learning rate policy from")
    p.add_argument("--repeats", type=int, default=3, help="forward-time samples per net (default 3; 0: no timing)")
    p.add_argument("--allow-inexact", action="store_true", help="also cut through LRN across channels")


def out_of(args: argparse.Namespace) -> Path:
    return args.out or Path("runs/synthetic") / (args.net.parent.name or args.net.stem)


def outputs(args: argparse.Namespace) -> tuple[dict, dict]:
    return {}, {} if args.out else {"the output folder": out_of(args)}


def execute(args: argparse.Namespace) -> dict[str, Any]:
    if args.batch > args.images:
        raise BadInput(f"--batch {args.batch} is larger than --images {args.images}")
    opts = Options(args.fraction, args.images, args.batch, args.finetune_iters, args.allow_inexact,
                   names(args.layers), args.solver, args.repeats)  # fmt: skip
    report = run(args.net, out_of(args), opts, log=(lambda _: None) if args.quiet else print)
    print(json.dumps(report, indent=1))
    return report
