"""Write LeNet's data as LMDBs of Caffe Datum records (train_lmdb, val_lmdb, test_lmdb).

Default: Fashion-MNIST from Debian's package dataset-fashion-mnist. MNIST: --download (the
four published files, MD5-checked) or --from DIR (local IDX files, .gz or not). A second run
with the same options and untouched databases says "up to date"; any database changed since
(its size or time) is written again.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytrim.caffeio.lmdb import write_datums
from pytrim.cli.options import positive
from pytrim.core.errors import BadInput
from pytrim.core.files import check_outputs, read_json, write_json
from pytrim.feeds.datasets import FASHION_MNIST_DIR, MNIST_URL, download_mnist, read_split

OUTPUTS = {"out": "folder"}


def outputs(args: argparse.Namespace) -> tuple[dict, dict]:
    return {}, {"--download-dir": args.download_dir} if args.download else {}


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=["fashion-mnist", "mnist"], default="fashion-mnist",
                        help="which dataset (default: fashion-mnist)")  # fmt: skip
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--from",
        dest="source",
        type=Path,
        help=f"folder with the four IDX files (default for fashion-mnist: {FASHION_MNIST_DIR})",
    )
    source.add_argument("--download", action="store_true",
                        help="mnist only: download the four IDX files (needs the internet)")  # fmt: skip
    parser.add_argument("--url", default=MNIST_URL, help=f"base URL for --download (default: {MNIST_URL})")
    parser.add_argument("--download-dir", type=Path, default=Path("data/mnist-raw"),
                        help="where --download keeps the IDX files (default: data/mnist-raw)")  # fmt: skip
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("data/lenet"),
        help="folder for train_lmdb, val_lmdb, test_lmdb and SOURCE.json (default: data/lenet)",
    )
    parser.add_argument("--val-images", type=int, default=5000,
                        help="the last N training images are held out as the validation split val_lmdb "
                             "(default 5000; 0: none)")  # fmt: skip
    parser.add_argument("--train-images", type=positive, help="keep only the first N training images")
    parser.add_argument("--test-images", type=positive, help="keep only the first N test images")
    parser.add_argument("--force", action="store_true", help="rewrite even if the output is up to date")


def source_folder(args: argparse.Namespace) -> Path:
    """Where the four IDX files are: downloaded, given, or Debian's Fashion-MNIST."""
    if args.download and args.dataset != "mnist":
        raise BadInput("--download is for --dataset mnist (fashion-mnist comes from Debian's dataset-fashion-mnist)")
    if args.download:
        return download_mnist(args.download_dir, base_url=args.url)
    if args.source is not None:
        return args.source
    if args.dataset == "mnist":
        raise BadInput("mnist needs --download (internet) or --from DIR (the four IDX files)")
    if not FASHION_MNIST_DIR.is_dir():
        raise BadInput(
            f"{FASHION_MNIST_DIR} is missing: install Debian's package dataset-fashion-mnist "
            "(apt-get install dataset-fashion-mnist)"
        )
    return FASHION_MNIST_DIR


def identity(out: Path, splits: list[str]) -> dict[str, str]:
    """Size and modification time of each split's data.mdb (what a later run compares)."""
    found = {}
    for split in splits:
        mdb = out / f"{split}_lmdb" / "data.mdb"
        found[split] = f"{mdb.stat().st_size} {mdb.stat().st_mtime_ns}" if mdb.is_file() else "missing"
    return found


def up_to_date(out: Path, wanted: dict) -> dict | None:
    """The stamp of an earlier run that wrote exactly what is wanted, if its LMDBs are there
    as it left them."""
    stamp = out / "SOURCE.json"
    if not stamp.is_file():
        return None
    done = read_json(stamp, "data stamp")
    splits = ["train", "test", "val"] if wanted.get("val") else ["train", "test"]
    untouched = done.get("databases") == identity(out, splits)
    return done if untouched and {k: done.get(k) for k in wanted} == wanted else None


def execute(args: argparse.Namespace) -> dict[str, Any]:
    source = source_folder(args)
    check_outputs({"the source folder": source}, {"--out": args.out})
    wanted = {"dataset": args.dataset, "source": str(Path(source).resolve())}
    wanted |= {"limit_train": args.train_images, "limit_test": args.test_images, "val": args.val_images}
    done = None if args.force else up_to_date(args.out, wanted)
    if done:
        counts = ", ".join(f"{done.get(k, 0)} {k}" for k in ("train", "val", "test"))
        print(f"{args.out}: up to date ({args.dataset}, {counts} images)")
        return done
    # Read and check both splits completely before writing anything.
    splits = split_val({name: read_split(source, name) for name in ("train", "test")}, args)
    (args.out / "SOURCE.json").unlink(missing_ok=True)
    counts = {}
    for name, (images, labels) in splits.items():
        write_datums(images, labels, args.out / f"{name}_lmdb", progress=not args.quiet)
        counts[name] = len(labels)
    stamp = {**wanted, **counts, "databases": identity(args.out, list(splits))}
    write_json(args.out / "SOURCE.json", stamp)
    print(f"{args.out}: wrote {args.dataset} as LMDB ({', '.join(f'{n} {k}' for k, n in counts.items())} images)")
    return stamp


def split_val(splits: dict, args: argparse.Namespace) -> dict[str, tuple]:
    """train (the first images of the training split), val (its last --val images), test."""
    train, test = splits["train"], splits["test"]
    if not 0 <= args.val_images < len(train.labels):
        raise BadInput(f"--val-images {args.val_images}: the training split has {len(train.labels)} images")
    cut = len(train.labels) - args.val_images
    out = {"train": (train.images[:cut], train.labels[:cut])}
    if args.val_images:
        out["val"] = (train.images[cut:], train.labels[cut:])
    out["test"] = (test.images, test.labels)
    limits = {"train": args.train_images, "test": args.test_images}
    return {name: (images[: limits.get(name) or None], labels[: limits.get(name) or None])
            for name, (images, labels) in out.items()}  # fmt: skip
