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
import sys
from pathlib import Path

from pytrim.cli import run

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "data"))  # data/prepare_imagenet.py
sys.path.insert(0, str(ROOT / "tools"))  # tools/overlap.py


WEIGHTS_URL = "http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/VGG_ILSVRC_16_layers.caffemodel"


def missing_inputs(
    weights: Path | None,
    val: Path | None,
    val_labels: Path | None,
    train: Path | None,
    train_labels: Path | None,
    retrain: bool,
) -> list[str]:
    """What a real run lacks, each with where to get it."""
    from prepare_imagenet import HOW_TO_GET

    missing = []
    if weights is None or not weights.is_file():
        missing.append(
            f"the published VGG-16 weights{f' (not found: {weights})' if weights else ''}: --weights / "
            f"VGG16_WEIGHTS=VGG_ILSVRC_16_layers.caffemodel (528 MB, model zoo gist 211839e770f7b538e2d8) from "
            f"{WEIGHTS_URL}"
        )
    for split, source, labels, needed in (("val", val, val_labels, True), ("train", train, train_labels, retrain)):
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", action="store_true", help="filler weights and generated images")
    parser.add_argument("--images", type=int, default=8, help="--synthetic: generated images (default 8)")
    parser.add_argument("--batch", type=int, default=4, help="--synthetic: batch size (default 4)")
    parser.add_argument("--solver-iters", type=int, default=2, help="--synthetic: solver iterations (default 2)")
    parser.add_argument("--layers", default="conv5_3,fc6", help="layers to trim (default conv5_3,fc6)")
    parser.add_argument("--weights", type=Path, help="VGG_ILSVRC_16_layers.caffemodel (V1 is upgraded)")
    parser.add_argument("--val", type=Path, help="ImageNet validation: LMDB folder or JPEG folder")
    parser.add_argument("--val-labels", type=Path, help="labels for a JPEG folder (lines 'path label')")
    parser.add_argument("--train", type=Path, help="ImageNet training set: LMDB folder or JPEG folder")
    parser.add_argument("--train-labels", type=Path, help="labels for a JPEG folder")
    parser.add_argument("--limit", type=int, help="use only the first N images of each split")
    parser.add_argument("--widths", help="apply one width plan instead of the schedule, e.g. conv5_3=390,fc6=1513")
    parser.add_argument("--no-retrain", action="store_true", help="with --widths: cut and evaluate, no retraining")
    parser.add_argument(
        "--overlap",
        action="store_true",
        help="first compare the neurons chosen on validation vs a same-size training sample",
    )
    parser.add_argument("--schedule", type=Path, default=ROOT / "prototxt/vgg16/trim.toml")
    parser.add_argument("--iterations", type=int, help="override the schedule's iterations")
    parser.add_argument("--finetune-iters", type=int, help="override the schedule's fine-tuning iterations")
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

    retrain = not args.no_retrain
    if args.overlap and args.train is None:
        parser.error("--overlap compares the validation data with a training sample: give --train")
    missing = missing_inputs(args.weights, args.val, args.val_labels, args.train, args.train_labels, retrain)
    if missing:
        print("error: VGG-16 trimming needs files that are not here:\n  - " + "\n  - ".join(missing), file=sys.stderr)
        print("(tools/vgg16.py --synthetic runs the same machinery on generated data)", file=sys.stderr)
        return 2
    from prepare_imagenet import prepare

    from pytrim.loop import Loop, load_schedule
    from pytrim.report import markdown, write
    from pytrim.upgrade import current_format

    out = args.out or Path("runs/vgg16-trim")
    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    prepare("val", args.val, args.val_labels, data_dir, args.limit)
    if args.train is not None:
        prepare("train", args.train, args.train_labels, data_dir, args.limit)
    else:  # no retraining: the TRAIN phase is never run; point it at the validation data
        link = data_dir / "train_lmdb"
        if link.is_symlink():
            link.unlink()
        if not link.exists():
            link.symlink_to((data_dir / "val_lmdb").resolve(), target_is_directory=True)
    net = net_with_data(ROOT / "prototxt/vgg16/train_val.prototxt", out / "train_val.prototxt", data_dir)
    if args.overlap:
        import overlap as overlap_tool

        overlap_tool.main(
            [
                "--net",
                str(net),
                "--weights",
                str(current_format(args.weights, "weights")),
                "--other",
                str(data_dir / "train_lmdb"),
                "--layers",
                args.layers,
            ]
            + (["--limit", str(args.limit)] if args.limit else [])
        )
    overrides = {
        "out": str(out),
        "net": str(net),
        "weights": str(current_format(args.weights, "weights")),
        "iterations": args.iterations,
        "finetune_iters": args.finetune_iters,
    }
    if args.widths:
        overrides.update(
            iterations=1,
            widths={k: int(v) for k, v in (i.split("=") for i in args.widths.split(","))},
            layers=[i.split("=")[0] for i in args.widths.split(",")],
        )
        if args.no_retrain:
            overrides["finetune_iters"] = 0
    schedule = load_schedule(args.schedule, **overrides)
    state = Loop(schedule).run()
    report = write(state, schedule.out, "Network Trimming: VGG-16", top5=True)
    print(markdown(report, "Network Trimming: VGG-16", top5=True))
    return 0


def net_with_data(train_val: Path, out: Path, data_dir: Path) -> Path:
    """train_val with its Data layers reading data_dir/{train,val}_lmdb."""
    from pytrim.datasets import lmdb_entries
    from pytrim.protoutil import read_net, set_data_sources, write_text

    # A validation subset smaller than a batch: no image is pushed through twice.
    train, test = data_dir / "train_lmdb", data_dir / "val_lmdb"
    net = set_data_sources(read_net(train_val), train, test, max_batch=lmdb_entries(test))
    return write_text(net, out)


if __name__ == "__main__":
    run(main)
