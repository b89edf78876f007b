"""Write LeNet's data as LMDBs of Caffe Datum records (train_lmdb, test_lmdb).

Default: Fashion-MNIST from Debian's package dataset-fashion-mnist. MNIST: --download (the
four published files, MD5-checked) or --from DIR (local IDX files, .gz or not).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pytrim.cli import parser as make_parser
from pytrim.datasets import (
    FASHION_MNIST_DIR,
    MNIST_URL,
    download_mnist,
    read_split,
    write_lmdb,
)
from pytrim.errors import BadInput
from pytrim.files import check_outputs, read_json, write_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    parser.add_argument(
        "--dataset",
        choices=["fashion-mnist", "mnist"],
        default="fashion-mnist",
        help="which dataset (default: fashion-mnist)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--from",
        dest="source",
        type=Path,
        help=f"folder with the four IDX files (default for fashion-mnist: {FASHION_MNIST_DIR})",
    )
    source.add_argument(
        "--download", action="store_true", help="mnist only: download the four IDX files (needs the internet)"
    )
    parser.add_argument("--url", default=MNIST_URL, help=f"base URL for --download (default: {MNIST_URL})")
    parser.add_argument(
        "--raw",
        type=Path,
        default=Path("data/mnist-raw"),
        help="where --download keeps the IDX files (default: data/mnist-raw)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("data/lenet"),
        help="output folder for train_lmdb, val_lmdb, test_lmdb and SOURCE.json (default: data/lenet)",
    )
    parser.add_argument(
        "--val",
        type=int,
        default=5000,
        help="the last N training images are held out as the validation split val_lmdb (default 5000; 0: none)",
    )
    parser.add_argument("--limit-train", type=int, help="keep only the first N training images")
    parser.add_argument("--limit-test", type=int, help="keep only the first N test images")
    parser.add_argument("--force", action="store_true", help="rewrite even if the output is up to date")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def source_folder(args: argparse.Namespace) -> Path:
    """Where the four IDX files are: downloaded, given, or Debian's Fashion-MNIST."""
    if args.download and args.dataset != "mnist":
        raise BadInput("--download is for --dataset mnist (fashion-mnist comes from Debian's dataset-fashion-mnist)")
    if args.download:
        return download_mnist(args.raw, base_url=args.url)
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


def up_to_date(out: Path, wanted: dict) -> dict | None:
    """The stamp of an earlier run that wrote exactly what is wanted, if its LMDBs are there."""
    stamp = out / "SOURCE.json"
    if not stamp.is_file():
        return None
    done = read_json(stamp, "data stamp")
    splits = ("train", "test", "val") if wanted.get("val") else ("train", "test")
    complete = all((out / f"{s}_lmdb" / "data.mdb").is_file() for s in splits)
    return done if complete and {k: done.get(k) for k in wanted} == wanted else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source = source_folder(args)
    check_outputs({"the source folder": source}, {"--out": args.out})
    wanted = {"dataset": args.dataset, "source": str(Path(source).resolve())}
    wanted |= {"limit_train": args.limit_train, "limit_test": args.limit_test, "val": args.val}
    done = None if args.force else up_to_date(args.out, wanted)
    if done:
        counts = ", ".join(f"{done.get(k, 0)} {k}" for k in ("train", "val", "test"))
        print(f"{args.out}: up to date ({args.dataset}, {counts} images)")
        return 0
    # Read and check both splits completely before writing anything.
    splits = split_val({name: read_split(source, name) for name in ("train", "test")}, args)
    (args.out / "SOURCE.json").unlink(missing_ok=True)
    counts = {}
    for name, (images, labels) in splits.items():
        write_lmdb(images, labels, args.out / f"{name}_lmdb", progress=not args.quiet)
        counts[name] = len(labels)
    write_json(args.out / "SOURCE.json", {**wanted, **counts})
    print(f"{args.out}: wrote {args.dataset} as LMDB ({', '.join(f'{n} {k}' for k, n in counts.items())} images)")
    return 0


def split_val(splits: dict, args: argparse.Namespace) -> dict[str, tuple]:
    """train (the first images of the training split), val (its last --val images), test."""
    train, test = splits["train"], splits["test"]
    if not 0 <= args.val < len(train.labels):
        raise BadInput(f"--val {args.val}: the training split has {len(train.labels)} images")
    cut = len(train.labels) - args.val
    out = {"train": (train.images[:cut], train.labels[:cut])}
    if args.val:
        out["val"] = (train.images[cut:], train.labels[cut:])
    out["test"] = (test.images, test.labels)
    limits = {"train": args.limit_train, "test": args.limit_test}
    return {name: (images[: limits.get(name) or None], labels[: limits.get(name) or None])
            for name, (images, labels) in out.items()}  # fmt: skip
