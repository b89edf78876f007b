#!/usr/bin/env python3
"""Write LeNet's data as LMDBs of Caffe Datum records (train_lmdb, test_lmdb).

Default: Fashion-MNIST from Debian's package dataset-fashion-mnist. MNIST: --download (the
four published files, MD5-checked) or --from DIR (local IDX files, .gz or not).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pytrim.cli import run
from pytrim.datasets import (
    FASHION_MNIST_DIR,
    MNIST_URL,
    download_mnist,
    read_split,
    write_lmdb,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
        help="output folder for train_lmdb, test_lmdb and SOURCE.json (default: data/lenet)",
    )
    parser.add_argument("--limit-train", type=int, help="keep only the first N training images")
    parser.add_argument("--limit-test", type=int, help="keep only the first N test images")
    parser.add_argument("--force", action="store_true", help="rewrite even if the output is up to date")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.download and args.dataset != "mnist":
        print(
            "error: --download is for --dataset mnist (fashion-mnist comes from Debian's "
            "package dataset-fashion-mnist)",
            file=sys.stderr,
        )
        return 2
    if args.download:
        source = download_mnist(args.raw, base_url=args.url)
    elif args.source is not None:
        source = args.source
    elif args.dataset == "fashion-mnist":
        source = FASHION_MNIST_DIR
        if not source.is_dir():
            print(
                f"error: {source} is missing: install Debian's package dataset-fashion-mnist "
                "(apt-get install dataset-fashion-mnist)",
                file=sys.stderr,
            )
            return 1
    else:
        print("error: mnist needs --download (internet) or --from DIR (the four IDX files)", file=sys.stderr)
        return 2

    wanted = {
        "dataset": args.dataset,
        "source": str(Path(source).resolve()),
        "limit_train": args.limit_train,
        "limit_test": args.limit_test,
    }
    stamp = args.out / "SOURCE.json"
    if not args.force and stamp.is_file():
        done = json.loads(stamp.read_text())
        if {k: done.get(k) for k in wanted} == wanted and all(
            (args.out / f"{s}_lmdb" / "data.mdb").is_file() for s in ("train", "test")
        ):
            print(f"{args.out}: up to date ({args.dataset}, {done['train']} train / {done['test']} test)")
            return 0
    # Read and check both splits completely before writing anything.
    splits = {name: read_split(source, name) for name in ("train", "test")}
    limits = {"train": args.limit_train, "test": args.limit_test}
    args.out.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    counts = {}
    for name, split in splits.items():
        n = limits[name] or len(split.labels)
        write_lmdb(split.images[:n], split.labels[:n], args.out / f"{name}_lmdb", progress=not args.quiet)
        counts[name] = int(min(n, len(split.labels)))
    stamp.write_text(json.dumps({**wanted, **counts}, indent=2) + "\n")
    print(f"{args.out}: wrote {args.dataset} as LMDB ({counts['train']} train / {counts['test']} test images)")
    return 0


if __name__ == "__main__":
    run(main)
