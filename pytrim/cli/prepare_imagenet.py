"""Put ImageNet (ILSVRC2012) where prototxt/vgg16/train_val.prototxt reads it.

For each split (--val, --train): an existing LMDB folder is linked as
<out>/<split>_lmdb; a folder of JPEGs plus a labels file (lines "relative/path.JPEG
label", as Caffe's ilsvrc12 val.txt/train.txt) is converted with Caffe's convert_imageset,
resized to 256x256, in a seeded random order (--seed; training minibatches must mix
classes). --images N keeps a seeded random subset of N images. Nothing is downloaded:
ImageNet is supplied by the user.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytrim.cli import MissingInputs
from pytrim.cli.options import positive
from pytrim.core.files import write_json
from pytrim.feeds.imagenet import HOW_TO_GET, prepare

OUTPUTS = {"out": "folder"}


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--val", type=Path, help="validation LMDB folder, or folder of JPEGs")
    p.add_argument("--val-labels", type=Path, help="labels file for a JPEG folder (path label)")
    p.add_argument("--train", type=Path, help="training LMDB folder, or folder of JPEGs (to retrain)")
    p.add_argument("--train-labels", type=Path, help="labels file for a JPEG folder (path label)")
    p.add_argument("--images", type=positive, help="keep a seeded random subset of N images of each split")
    p.add_argument("--seed", type=int, default=0, help="seed of the order and the subset (default 0)")
    p.add_argument("--out", type=Path, default=Path("data/imagenet"), help="default: data/imagenet")


def execute(args: argparse.Namespace) -> dict[str, Any]:
    if not args.val and not args.train:
        raise MissingInputs(f"nothing to prepare: give --val (and --train to retrain). {HOW_TO_GET}")
    done = []
    for split, source, labels in (("val", args.val, args.val_labels), ("train", args.train, args.train_labels)):
        if source is not None:
            done.append(prepare(split, source, labels, args.out, args.images, args.seed))
            print(f"{args.out / (split + '_lmdb')}: {done[-1]['images']} images ({done[-1]['kind']})")
    write_json(args.out / "SOURCE.json", done)
    return {"splits": done}
