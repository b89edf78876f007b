"""ImageNet (ILSVRC2012) as LMDBs where the VGG-16 prototxts read them.

For each split: an existing LMDB folder is linked as <out>/<split>_lmdb; a folder of JPEGs
plus a labels file (lines "relative/path.JPEG label", as Caffe's ilsvrc12 val.txt) is
converted with Caffe's convert_imageset, resized to 256x256 (the 224 crops are taken by the
Data layer). The image list is shuffled with a seeded generator before conversion (what
convert_imageset --shuffle does, but reproducible), so that SGD never sees one class per
minibatch; `images` keeps a seeded random subset of that many. Nothing is downloaded.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pytrim.caffeio.env import caffe_tool
from pytrim.caffeio.lmdb import entries as lmdb_entries
from pytrim.core.errors import DatasetError, StepFailed
from pytrim.core.files import check_outputs, together
from pytrim.core.runner import run_child

HOW_TO_GET = (
    "ImageNet (ILSVRC2012) is not downloadable here: register at https://image-net.org, download "
    "ILSVRC2012_img_val.tar (50,000 validation JPEGs) and, to retrain, ILSVRC2012_img_train.tar; "
    "labels as Caffe's ilsvrc12 val.txt/train.txt (data/ilsvrc12/get_ilsvrc_aux.sh in Caffe's tree)"
)


def read_labels(labels: Path, source: Path) -> list[str]:
    """The 'path label' lines of a labels file, checked (format, and that images exist)."""
    lines = [line for line in labels.read_text().splitlines() if line.strip()]
    for number, line in enumerate(lines, 1):
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].isdigit():
            raise DatasetError(f"{labels}:{number}: expected 'path label', got {line!r}")
    missing = [line.rsplit(maxsplit=1)[0] for line in lines if not (source / line.rsplit(maxsplit=1)[0]).is_file()]
    if missing:
        raise DatasetError(f"{source}: {len(missing)} listed images are missing, e.g. {missing[0]}")
    return lines


def sample(lines: list[str], images: int | None, seed: int) -> list[str]:
    """All lines in a seeded random order, or a seeded random subset of `images` of them."""
    chosen = list(lines)
    random.Random(seed).shuffle(chosen)
    return chosen[:images] if images else chosen


def link_lmdb(source: Path, target: Path) -> dict[str, Any]:
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)
    target.symlink_to(source.resolve(), target_is_directory=True)
    return {"kind": "lmdb", "source": str(source.resolve()), "images": lmdb_entries(target)}


def convert(source: Path, lines: list[str], target: Path) -> None:
    """convert_imageset over `lines` (in this order) into `target`, complete or not at all."""
    with tempfile.TemporaryDirectory(prefix="pytrim-imagenet-") as tmp, together([target]) as (partial,):
        listing = Path(tmp) / "list.txt"
        listing.write_text("\n".join(lines) + "\n")
        args = [caffe_tool("convert_imageset"), "--resize_height=256", "--resize_width=256", "--backend=lmdb"]
        try:
            run_child(
                [*args, f"{source.resolve()}/", str(listing), str(partial)],
                Path(tmp) / "convert.log",
                "convert_imageset",
                env={"GLOG_logtostderr": "1"},
            )
        except StepFailed as exc:
            raise DatasetError(f"convert_imageset failed on {source}: {exc.reason or exc}") from None


def prepare(split: str, source: Path, labels: Path | None, out: Path, images: int | None, seed: int = 0) -> dict:
    """Link or convert one split into out/<split>_lmdb; return what was done."""
    target = out / f"{split}_lmdb"
    check_outputs({f"--{split}": source, f"--{split}-labels": labels}, {f"{split} LMDB": target})
    if (source / "data.mdb").is_file():
        if labels is not None:
            raise DatasetError(f"--{split} {source} is an LMDB: it needs no labels file")
        return {"split": split, **link_lmdb(source, target)}
    if not source.is_dir():
        raise DatasetError(f"--{split} {source}: no such LMDB or image folder. {HOW_TO_GET}")
    if labels is None or not labels.is_file():
        raise DatasetError(f"--{split} {source} is an image folder: --{split}-labels FILE is needed. {HOW_TO_GET}")
    lines = sample(read_labels(labels, source), images, seed)
    if target.is_symlink():
        target.unlink()
    convert(source, lines, target)
    return {
        "split": split,
        "kind": "images",
        "source": str(source.resolve()),
        "labels": str(labels),
        "images": lmdb_entries(target),
        "shuffled_seed": seed,
        "images_kept": images,
    }
