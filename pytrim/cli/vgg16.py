"""VGG-16 Network Trimming (the paper's headline experiment) and its synthetic stand-in.

python -m pytrim vgg16 --synthetic
    the whole machinery on the full-size VGG-16 (138,357,544 parameters, 224x224 input)
    with filler weights and a few generated images, on this CPU: collect, choose, cut
    (conv5_3 + fc6), verify, a few solver iterations; time and peak memory of each step in
    runs/vgg16-synthetic/report.json.
python -m pytrim vgg16 --weights VGG_ILSVRC_16_layers.caffemodel --val VAL [--train TRAIN]
    the paper's schedule (prototxt/vgg16/trim.toml) on the published model; without the
    files it says exactly what is missing and where to get it, and does nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pytrim.cli import add_common, finish, names, parser, per_layer
from pytrim.files import shipped

VGG16 = shipped("prototxt/vgg16")
WEIGHTS_URL = "http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/VGG_ILSVRC_16_layers.caffemodel"


def missing_inputs(args: argparse.Namespace, retrain: bool) -> list[str]:
    """What a real run lacks, each with where to get it."""
    from pytrim.imagenet import HOW_TO_GET

    missing = []
    if args.weights is None or not args.weights.is_file():
        missing.append(
            f"the published VGG-16 weights{f' (not found: {args.weights})' if args.weights else ''}: --weights / "
            f"VGG16_WEIGHTS=VGG_ILSVRC_16_layers.caffemodel (528 MB, model zoo gist 211839e770f7b538e2d8) from "
            f"{WEIGHTS_URL}"
        )
    for split, source, labels, needed in (
        ("val", args.val, args.val_labels, True),
        ("train", args.train, args.train_labels, retrain),
    ):
        if not needed:
            continue
        if source is None or not source.exists():
            what = "validation set (APoZ and accuracy)" if split == "val" else "training set (retraining)"
            missing.append(
                f"the ImageNet {what}{f' (not found: {source})' if source else ''}: --{split} / "
                f"IMAGENET_{split.upper()}=an LMDB folder, or a folder of JPEGs with --{split}-labels. {HOW_TO_GET}"
            )
        elif not (source / "data.mdb").is_file() and (labels is None or not labels.is_file()):
            missing.append(f"labels for the {split} images in {source}: --{split}-labels FILE (lines 'path label')")
    return missing


def prepare_data(args: argparse.Namespace, out: Path) -> Path:
    """The ImageNet LMDBs under out/data and a train_val prototxt reading them."""
    from pytrim.datasets import lmdb_entries
    from pytrim.imagenet import prepare
    from pytrim.protoutil import read_net, set_data_sources, write_text

    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    prepare("val", args.val, args.val_labels, data, args.limit)
    if args.train is not None:
        prepare("train", args.train, args.train_labels, data, args.limit)
    else:  # no retraining: the TRAIN phase never runs; point it at the validation data
        link = data / "train_lmdb"
        link.unlink(missing_ok=True)
        link.symlink_to((data / "val_lmdb").resolve(), target_is_directory=True)
    # A validation subset smaller than a batch: no image is pushed through twice.
    test = data / "val_lmdb"
    net = set_data_sources(
        read_net(VGG16 / "train_val.prototxt"), data / "train_lmdb", test, max_batch=lmdb_entries(test)
    )
    return write_text(net, out / "train_val.prototxt")


def overlap(args: argparse.Namespace, net: Path, weights: Path, out: Path) -> None:
    from pytrim.cli.overlap import main as overlap_main

    extra = ["--limit", str(args.limit)] if args.limit else []
    overlap_main(
        [
            "--net",
            str(net),
            "--weights",
            str(weights),
            "--other",
            str(out / "data/train_lmdb"),
            "--layers",
            args.layers,
            *extra,
        ]
    )


def real_run(args: argparse.Namespace) -> dict[str, Any]:
    from pytrim.files import claim_run_folder
    from pytrim.loop import run_schedule
    from pytrim.report import markdown, write
    from pytrim.schedule import load_schedule
    from pytrim.upgrade import current_format

    out = args.out or Path("runs/vgg16-trim")
    claim_run_folder(out, "vgg16")
    net = prepare_data(args, out)
    weights = current_format(args.weights, "weights")
    if args.overlap:
        overlap(args, net, weights, out)
    overrides: dict[str, Any] = {"out": str(out), "net": str(net), "weights": str(weights)}
    overrides |= {"iterations": args.iterations, "finetune_iters": args.finetune_iters}
    if args.widths:
        plan = per_layer(args.widths.split(","), int)
        overrides |= {"iterations": 1, "widths": plan, "layers": list(plan)}
        overrides |= {"finetune_iters": 0} if args.no_retrain else {}
    schedule = load_schedule(args.schedule, **overrides)
    state = run_schedule(schedule)
    report = write(state, schedule.out, "Network Trimming: VGG-16", top5=True, val=schedule.val_data is not None)
    print(markdown(report, "Network Trimming: VGG-16", top5=True))
    return report


def synthetic_run(args: argparse.Namespace) -> dict[str, Any]:
    import json

    from pytrim.synthetic import Options, run

    opts = Options(0.25, args.images, args.batch, args.solver_iters, layers=names(args.layers))
    report = run(VGG16 / "deploy.prototxt", args.out or Path("runs/vgg16-synthetic"), opts)
    print(json.dumps(report, indent=1))
    return report


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--synthetic", action="store_true", help="filler weights and generated images")
    p.add_argument("--images", type=int, default=8, help="--synthetic: generated images (default 8)")
    p.add_argument("--batch", type=int, default=4, help="--synthetic: batch size (default 4)")
    p.add_argument("--solver-iters", type=int, default=2, help="--synthetic: solver iterations (default 2)")
    p.add_argument("--layers", default="conv5_3,fc6", help="layers to trim (default conv5_3,fc6)")
    p.add_argument("--weights", type=Path, help="VGG_ILSVRC_16_layers.caffemodel (V1 is upgraded)")
    p.add_argument("--val", type=Path, help="ImageNet validation: LMDB folder or JPEG folder")
    p.add_argument("--val-labels", type=Path, help="labels for a JPEG folder (lines 'path label')")
    p.add_argument("--train", type=Path, help="ImageNet training set: LMDB folder or JPEG folder")
    p.add_argument("--train-labels", type=Path, help="labels for a JPEG folder")
    p.add_argument("--limit", type=int, help="use a seeded random subset of N images of each split")
    p.add_argument("--widths", help="apply one width plan instead of the schedule, e.g. conv5_3=390,fc6=1513")
    p.add_argument("--no-retrain", action="store_true", help="with --widths: cut and evaluate, no retraining")
    p.add_argument(
        "--overlap",
        action="store_true",
        help="first compare the neurons chosen on validation vs a same-size training sample",
    )
    p.add_argument("--schedule", type=Path, default=VGG16 / "trim.toml")
    p.add_argument("--iterations", type=int, help="override the schedule's iterations")
    p.add_argument("--finetune-iters", type=int, help="override the schedule's fine-tuning iterations")
    p.add_argument("--out", type=Path, help="output folder (default runs/vgg16-synthetic or runs/vgg16-trim)")


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    add_options(p)
    add_common(p)
    args = p.parse_args(argv)
    if args.synthetic:
        finish(args, synthetic_run(args))
        return 0
    if args.overlap and args.train is None:
        p.error("--overlap compares the validation data with a training sample: give --train")
    missing = missing_inputs(args, retrain=not args.no_retrain)
    if missing:
        print("error: VGG-16 trimming needs files that are not here:\n  - " + "\n  - ".join(missing), file=sys.stderr)
        print("(python -m pytrim vgg16 --synthetic runs the same machinery on generated data)", file=sys.stderr)
        return 2
    finish(args, real_run(args))
    return 0
