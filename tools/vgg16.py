#!/usr/bin/env python3
"""VGG-16 Network Trimming (the paper's headline experiment) and its synthetic stand-in.

tools/vgg16.py --synthetic
    the whole machinery on the full-size VGG-16 (138,357,544 parameters, 224x224 input)
    with filler weights and a few generated images, on this CPU: collect, choose, cut
    (conv5_3 + fc6), verify, a few solver iterations; time and peak memory of each step in
    runs/vgg16-synthetic/report.json.
tools/vgg16.py --weights VGG_ILSVRC_16_layers.caffemodel --val VAL [--train TRAIN]
    the paper's schedule (prototxt/vgg16/trim.toml) on the published model; without the
    files it says exactly what is missing and where to get it, and does nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pytrim.cli import run

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", action="store_true", help="filler weights and generated images")
    parser.add_argument("--images", type=int, default=8, help="--synthetic: generated images (default 8)")
    parser.add_argument("--batch", type=int, default=4, help="--synthetic: batch size (default 4)")
    parser.add_argument("--solver-iters", type=int, default=2, help="--synthetic: solver iterations (default 2)")
    parser.add_argument("--layers", default="conv5_3,fc6", help="layers to trim (default conv5_3,fc6)")
    parser.add_argument("--out", type=Path, help="output folder (default runs/vgg16-synthetic or runs/vgg16-trim)")
    args = parser.parse_args(argv)
    if args.synthetic:
        from pytrim.synthetic import run as synthetic

        report = synthetic(
            ROOT / "prototxt/vgg16/train_val.prototxt",
            ROOT / "prototxt/vgg16/deploy.prototxt",
            args.out or Path("runs/vgg16-synthetic"),
            [n.strip() for n in args.layers.split(",")],
            images=args.images,
            batch=args.batch,
            solver_iters=args.solver_iters,
        )
        print(json.dumps(report, indent=1))
        return 0
    parser.error("only --synthetic is available yet")
    return 2


if __name__ == "__main__":
    run(main)
