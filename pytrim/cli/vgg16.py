"""VGG-16 Network Trimming (the paper's headline experiment) and its synthetic stand-in.

python -m pytrim vgg16 --synthetic
    the whole machinery on the full-size VGG-16 (138,357,544 parameters, 224x224 input)
    with random weights and a few generated images, on this CPU: collect, choose, cut
    (conv5_3 + fc6), verify, a few solver iterations; time and peak memory of each step in
    runs/vgg16-synthetic/report.json.
python -m pytrim vgg16 --weights VGG_ILSVRC_16_layers.caffemodel --val VAL [--train TRAIN]
    the paper's schedule (prototxt/vgg16/trim.toml) on the published model; without the
    files it says exactly what is missing and where to get it, does nothing, exit code 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pytrim.cli import MissingInputs
from pytrim.cli.options import names, per_layer, positive
from pytrim.core.errors import BadInput
from pytrim.experiments.vgg16 import VGG16, Inputs, missing, real_run, synthetic_run
from pytrim.loop.report import markdown

OUTPUTS = {"out": "folder"}
RESUMABLE = True


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--synthetic", action="store_true", help="random weights and generated images")
    p.add_argument("--images", type=positive, help="--synthetic: generated images (default 8); else: a seeded random "
                   "subset of N images of each split")  # fmt: skip
    p.add_argument("--batch", type=positive, default=4, help="--synthetic: batch size (default 4)")
    p.add_argument("--finetune-iters", type=int, help="solver iterations of each retraining (--synthetic: 2; "
                   "else the schedule's; 0: none)")  # fmt: skip
    p.add_argument("--layers", default="conv5_3,fc6", help="layers to trim (default conv5_3,fc6)")
    p.add_argument("--repeats", type=int, default=3, help="--synthetic: forward-time samples per net (default 3)")
    p.add_argument("--weights", type=Path, help="VGG_ILSVRC_16_layers.caffemodel (V1 is upgraded)")
    p.add_argument("--val", type=Path, help="ImageNet validation: LMDB folder or JPEG folder")
    p.add_argument("--val-labels", type=Path, help="labels for a JPEG folder (lines 'path label')")
    p.add_argument("--train", type=Path, help="ImageNet training set: LMDB folder or JPEG folder")
    p.add_argument("--train-labels", type=Path, help="labels for a JPEG folder")
    p.add_argument("--widths", metavar="LAYER=N,...", help="apply one width plan instead of the schedule, "
                   "e.g. conv5_3=390,fc6=1513")  # fmt: skip
    p.add_argument(
        "--overlap",
        action="store_true",
        help="first compare the neurons chosen on validation vs a same-size training sample",
    )
    p.add_argument("--schedule", type=Path, default=VGG16 / "trim.toml")
    p.add_argument("--iterations", type=int, help="override the schedule's iterations")
    p.add_argument("--out", type=Path, help="output folder (default runs/vgg16-synthetic or runs/vgg16-trim)")


def outputs(args: argparse.Namespace) -> tuple[dict, dict]:
    default = Path("runs/vgg16-synthetic" if args.synthetic else "runs/vgg16-trim")
    return {}, {} if args.out else {"the output folder": default}


def overrides_of(args: argparse.Namespace) -> dict[str, Any]:
    found: dict[str, Any] = {"iterations": args.iterations, "finetune_iters": args.finetune_iters}
    if args.widths:
        plan = per_layer(args.widths, int, "--widths")
        found |= {"iterations": 1, "widths": plan, "layers": list(plan)}
    return found


def check(args: argparse.Namespace) -> None:
    """A real run's files are all here (else the list of what is missing, exit code 2)."""
    if args.synthetic:
        return
    if args.overlap and args.train is None:
        raise BadInput("--overlap compares the validation data with a training sample: give --train")
    given = Inputs(args.weights, args.val, args.val_labels, args.train, args.train_labels)
    lacking = missing(given, retrain=args.finetune_iters != 0)
    if lacking:
        raise MissingInputs(
            "VGG-16 trimming needs files that are not here:\n  - "
            + "\n  - ".join(lacking)
            + "\n(python -m pytrim vgg16 --synthetic runs the same machinery on generated data)"
        )


def execute(args: argparse.Namespace) -> dict[str, Any]:
    if args.synthetic:
        out = args.out or Path("runs/vgg16-synthetic")
        iters = 2 if args.finetune_iters is None else args.finetune_iters
        report = synthetic_run(out, args.images or 8, args.batch, iters, names(args.layers), args.repeats)
        print(json.dumps(report, indent=1))
        return report
    given = Inputs(args.weights, args.val, args.val_labels, args.train, args.train_labels)
    out = args.out or Path("runs/vgg16-trim")
    report = real_run(given, out, args.schedule, overrides_of(args), args.images,
                      names(args.layers) if args.overlap else None)  # fmt: skip
    print(markdown(report, "Network Trimming: VGG-16", top5=True))
    return report
