"""Put ImageNet (ILSVRC2012) where prototxt/vgg16/train_val.prototxt reads it.

For each split (--val, --train): an existing LMDB folder is linked as
<out>/<split>_lmdb; a folder of JPEGs plus a labels file (lines "relative/path.JPEG
label", as Caffe's ilsvrc12 val.txt/train.txt) is converted with Caffe's convert_imageset,
resized to 256x256, in a seeded random order (--seed; training minibatches must mix
classes). --limit N keeps a seeded random subset of N images. Nothing is downloaded:
ImageNet is supplied by the user.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pytrim.cli import add_common, finish, parser
from pytrim.files import write_json
from pytrim.imagenet import HOW_TO_GET, prepare


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--val", type=Path, help="validation LMDB folder, or folder of JPEGs")
    p.add_argument("--val-labels", type=Path, help="labels file for a JPEG folder (path label)")
    p.add_argument("--train", type=Path, help="training LMDB folder, or folder of JPEGs (to retrain)")
    p.add_argument("--train-labels", type=Path, help="labels file for a JPEG folder (path label)")
    p.add_argument("--limit", type=int, help="keep a seeded random subset of N images of each split")
    p.add_argument("--seed", type=int, default=0, help="seed of the order and the subset (default 0)")
    p.add_argument("--out", type=Path, default=Path("data/imagenet"), help="default: data/imagenet")
    add_common(p)
    args = p.parse_args(argv)
    if not args.val and not args.train:
        print(f"error: nothing to prepare: give --val (and --train to retrain). {HOW_TO_GET}", file=sys.stderr)
        return 2
    done = []
    for split, source, labels in (("val", args.val, args.val_labels), ("train", args.train, args.train_labels)):
        if source is not None:
            done.append(prepare(split, source, labels, args.out, args.limit, args.seed))
            print(f"{args.out / (split + '_lmdb')}: {done[-1]['images']} images ({done[-1]['kind']})")
    write_json(args.out / "SOURCE.json", done)
    finish(args, {"splits": done})
    return 0
