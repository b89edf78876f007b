"""MNIST-shaped datasets (MNIST, Fashion-MNIST): IDX files read and checked, MNIST downloaded.

The IDX reader checks every header field and the exact payload size, so a truncated or
wrong file fails before anything is written (LeNet's LMDBs are then written by
pytrim.caffeio.lmdb, complete or not at all). Downloads are checked against the published
MD5 sums.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pytrim.core.errors import DatasetError
from pytrim.core.files import together

# IDX magic numbers: two zero bytes, a type code (0x08 = unsigned byte), the number of axes.
IDX_UBYTE = 0x08
IMAGES_MAGIC = 0x00000803  # ubyte, 3 axes (N, rows, cols)
LABELS_MAGIC = 0x00000801  # ubyte, 1 axis (N)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist

# MNIST as published by Yann LeCun (mirrored by PyTorch), with the published MD5 sums.
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip, whatever the file is called
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, gzip.BadGzipFile) as exc:
            raise DatasetError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
    return raw


def read_idx(path: str | Path, expect_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) of unsigned bytes into an array."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DatasetError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    (magic,) = struct.unpack(">I", raw[:4])
    zero, dtype_code, ndim = magic >> 16, (magic >> 8) & 0xFF, magic & 0xFF
    if zero != 0 or dtype_code != IDX_UBYTE or ndim == 0:
        raise DatasetError(f"{path}: bad IDX magic number 0x{magic:08x} (not an unsigned-byte IDX file)")
    if expect_magic is not None and magic != expect_magic:
        raise DatasetError(f"{path}: IDX magic 0x{magic:08x}, expected 0x{expect_magic:08x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    payload = len(raw) - header
    if payload != expected:
        kind = "truncated" if payload < expected else "has trailing bytes"
        raise DatasetError(f"{path}: {kind}: shape {dims} needs {expected} data bytes, found {payload}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    raise DatasetError(f"{directory}: neither {stem}.gz nor {stem} found")


@dataclass
class Split:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 of one split."""

    images: np.ndarray
    labels: np.ndarray


def read_split(directory: str | Path, split: str) -> Split:
    """Read the train or test split of an MNIST-shaped dataset folder (IDX files)."""
    directory = Path(directory)
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} (train or test)")
    img_stem, lab_stem = SPLITS[split]
    images = read_idx(_find(directory, img_stem), IMAGES_MAGIC)
    labels = read_idx(_find(directory, lab_stem), LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{directory}: {split} has {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and int(labels.max()) > 9:
        raise DatasetError(f"{directory}: {split} labels go up to {int(labels.max())}, expected 0..9")
    return Split(images, labels)


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_mnist(
    dest: str | Path,
    base_url: str = MNIST_URL,
    checksums: dict[str, str] | None = None,
) -> Path:
    """Download the four MNIST IDX files into `dest`, each checked against its MD5.

    A file already present with the right checksum is kept; a download with the wrong one is
    deleted and raises DatasetError. `base_url` may be a file:// URL (used by the tests).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    checksums = MNIST_MD5 if checksums is None else checksums
    for name, md5 in checksums.items():
        target = dest / name
        if target.is_file() and md5sum(target) == md5:
            continue
        url = base_url.rstrip("/") + "/" + name
        with together([target]) as (partial,):
            try:
                with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
                    shutil.copyfileobj(response, out)
            except OSError as exc:
                raise DatasetError(f"download of {url} failed: {exc}") from exc
            got = md5sum(partial)
            if got != md5:
                raise DatasetError(f"{url}: MD5 {got} does not match the published {md5}")
    return dest
