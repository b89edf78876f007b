#!/usr/bin/env python3
"""Put ImageNet (ILSVRC2012) where prototxt/vgg16/train_val.prototxt reads it.

For each split (--val, --train): an existing LMDB folder is linked as
data/imagenet/<split>_lmdb; a folder of JPEGs plus a labels file (lines "relative/path.JPEG
label", as Caffe's ilsvrc12 val.txt/train.txt) is converted with Caffe's convert_imageset,
resized to 256x256 (the paper's 224 crops are taken by the Data layer). --limit N keeps the
first N images of the list. Nothing is downloaded: ImageNet is supplied by the user.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pytrim.caffe_env import caffe_tool
from pytrim.cli import run
from pytrim.datasets import DatasetError, lmdb_entries

HOW_TO_GET = (
    "ImageNet (ILSVRC2012) is not downloadable here: register at https://image-net.org, download "
    "ILSVRC2012_img_val.tar (50,000 validation JPEGs) and, to retrain, ILSVRC2012_img_train.tar; "
    "labels as Caffe's ilsvrc12 val.txt/train.txt (data/ilsvrc12/get_ilsvrc_aux.sh in Caffe's tree)"
)


def prepare(split: str, source: Path, labels: Path | None, out: Path, limit: int | None) -> dict:
    """Link or convert one split into out/<split>_lmdb; return what was done."""
    target = out / f"{split}_lmdb"
    if (source / "data.mdb").is_file():
        if labels is not None:
            raise DatasetError(f"--{split} {source} is an LMDB: it needs no labels file")
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        target.symlink_to(source.resolve(), target_is_directory=True)
        return {"split": split, "kind": "lmdb", "source": str(source.resolve()), "images": lmdb_entries(target)}
    if not source.is_dir():
        raise DatasetError(f"--{split} {source}: no such LMDB or image folder. {HOW_TO_GET}")
    if labels is None or not labels.is_file():
        raise DatasetError(f"--{split} {source} is an image folder: --{split}-labels FILE is needed. {HOW_TO_GET}")
    lines = [line for line in labels.read_text().splitlines() if line.strip()]
    for number, line in enumerate(lines[:50], 1):
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].isdigit():
            raise DatasetError(f"{labels}:{number}: expected 'path label', got {line!r}")
    if limit:
        lines = lines[:limit]
    missing = [
        line.rsplit(maxsplit=1)[0] for line in lines[:200] if not (source / line.rsplit(maxsplit=1)[0]).is_file()
    ]
    if missing:
        raise DatasetError(f"{source}: {len(missing)} of the first listed images are missing, e.g. {missing[0]}")
    partial = out / f"{split}_lmdb.partial"
    shutil.rmtree(partial, ignore_errors=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as listing:
        listing.write("\n".join(lines) + "\n")
    try:
        result = subprocess.run(
            [
                caffe_tool("convert_imageset"),
                "--resize_height=256",
                "--resize_width=256",
                "--backend=lmdb",
                f"{source.resolve()}/",
                listing.name,
                str(partial),
            ],
            capture_output=True,
            text=True,
            check=False,
            env=dict(os.environ, GLOG_logtostderr="1"),
        )
    finally:
        os.unlink(listing.name)
    if result.returncode != 0 or not (partial / "data.mdb").is_file():
        shutil.rmtree(partial, ignore_errors=True)
        tail = "\n  ".join(result.stderr.strip().splitlines()[-5:])
        raise DatasetError(f"convert_imageset failed on {source}:\n  {tail}")
    if target.is_symlink():
        target.unlink()
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return {
        "split": split,
        "kind": "images",
        "source": str(source.resolve()),
        "labels": str(labels),
        "images": lmdb_entries(target),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--val", type=Path, help="validation LMDB folder, or folder of JPEGs")
    parser.add_argument("--val-labels", type=Path, help="labels file for a JPEG folder (path label)")
    parser.add_argument("--train", type=Path, help="training LMDB folder, or folder of JPEGs (to retrain)")
    parser.add_argument("--train-labels", type=Path, help="labels file for a JPEG folder (path label)")
    parser.add_argument("--limit", type=int, help="keep only the first N listed images of each split")
    parser.add_argument("--out", type=Path, default=Path("data/imagenet"), help="default: data/imagenet")
    args = parser.parse_args(argv)
    if not args.val and not args.train:
        print(f"error: nothing to prepare: give --val (and --train to retrain). {HOW_TO_GET}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    done = []
    for split, source, labels in (("val", args.val, args.val_labels), ("train", args.train, args.train_labels)):
        if source is not None:
            done.append(prepare(split, source, labels, args.out, args.limit))
            print(f"{args.out / (split + '_lmdb')}: {done[-1]['images']} images ({done[-1]['kind']})")
    (args.out / "SOURCE.json").write_text(json.dumps(done, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    run(main)
