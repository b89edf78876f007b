"""The one LMDB reader and writer: databases of Caffe `Datum` records, as Caffe's Data layer
reads them.

LMDB has no positional access, so `Lmdb` walks the keys once and then reads records by
position. Writers create the database under a temporary name and rename it when complete
(pytrim.core.files.together): no half-written database is ever left. Decoding a record into
an image is pytrim.feeds.image's job; here records are bytes and Datum messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.env import caffe_pb2
from pytrim.core.errors import DatasetError
from pytrim.core.files import together


class Lmdb:
    """A read-only LMDB database: its size, its keys in order, records by position."""

    def __init__(self, path: str | Path) -> None:
        import lmdb

        self.path = Path(path)
        if not (self.path / "data.mdb").is_file():
            raise DatasetError(f"{self.path}: not an LMDB database (no data.mdb)")
        try:
            self.env = lmdb.open(str(self.path), readonly=True, lock=False)
        except lmdb.Error as exc:
            raise DatasetError(f"{self.path}: cannot be opened as an LMDB database ({exc})") from None
        self._keys: list[bytes] | None = None

    def __len__(self) -> int:
        return int(self.env.stat()["entries"])

    def keys(self) -> list[bytes]:
        """Every key, in the database's (Caffe's reading) order; walked once."""
        if self._keys is None:
            with self.env.begin() as txn:
                self._keys = list(txn.cursor().iternext(keys=True, values=False))
        return self._keys

    def values(self, positions: Iterable[int]) -> list[bytes]:
        """The records at these positions."""
        keys = self.keys()
        with self.env.begin() as txn:
            return [txn.get(keys[int(i)]) for i in positions]

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> Lmdb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def entries(path: str | Path) -> int:
    """Number of records in an LMDB database (Caffe's Data layer wraps around after it)."""
    with Lmdb(path) as db:
        return len(db)


def parse_datum(value: bytes, where: str = "") -> Any:
    """A record as a caffe_pb2.Datum; a record that is not one is an error naming it."""
    datum = caffe_pb2().Datum()
    try:
        datum.ParseFromString(value)
    except Exception as exc:  # protobuf's DecodeError
        raise DatasetError(f"{where}: not a Caffe Datum ({exc})") from None
    return datum


def sample_shapes(path: str | Path, samples: int = 16) -> dict[int, tuple[int, int, int] | None]:
    """(channels, height, width) of evenly spaced records, first and last included (None for
    encoded images, whose size is known only after decoding). Caffe aborts when a record
    does not fit the net, so a database with mixed sizes is found here first."""
    with Lmdb(path) as db:
        total = len(db)
        wanted = sorted({round(i * (total - 1) / max(1, samples - 1)) for i in range(samples)}) if total else []
        shapes = {}
        for index, value in zip(wanted, db.values(wanted), strict=True):
            datum = parse_datum(value, f"{path}: record {index}")
            shapes[index] = None if datum.encoded else (datum.channels, datum.height, datum.width)
    return shapes


def write_records(values: Iterable[bytes], out: str | Path, size: int, progress: bool = False, total: int = 0) -> Path:
    """An LMDB of `values` under keys 00000000, 00000001, ... (complete or not at all);
    `size`: bytes the values take (the map is sized from it)."""
    import lmdb
    from tqdm import tqdm

    out = Path(out)
    with together([out]) as (partial,):
        env = lmdb.open(str(partial), map_size=max(1 << 24, 2 * size + (1 << 20)))
        try:
            with env.begin(write=True) as txn:
                rows = tqdm(values, total=total or None, desc=f"LMDB {out.name}", disable=not progress)
                for index, value in enumerate(rows):
                    txn.put(f"{index:08d}".encode(), value)
        finally:
            env.close()
    return out


def _datums(images: np.ndarray, labels: np.ndarray) -> Iterator[bytes]:
    datum = caffe_pb2().Datum()
    if images.ndim == 3:  # (N, H, W) grey
        images = images[:, None]
    datum.channels, datum.height, datum.width = images.shape[1:]
    for image, label in zip(images, labels, strict=True):
        datum.data = image.tobytes()
        datum.label = int(label)
        yield datum.SerializeToString()


def write_datums(images: np.ndarray, labels: np.ndarray, out_dir: str | Path, progress: bool = True) -> Path:
    """Images (N, H, W) or (N, C, H, W), uint8, and labels as an LMDB of Datum records.
    Colour images are in Caffe's order: channels BGR, as OpenCV and convert_imageset write them."""
    if len(images) != len(labels):
        raise DatasetError(f"{len(images)} images but {len(labels)} labels")
    size = int(images.nbytes) + 64 * len(images)
    return write_records(_datums(images, labels), out_dir, size, progress, len(images))


def sample_lmdb(source: str | Path, out: str | Path, count: int | None, seed: int) -> Path:
    """A seeded random sample of `count` records of an LMDB (all of them if it has fewer, or
    for None) as a new LMDB, in a seeded random order: the images statistics are measured on,
    or a shuffled copy of the training data (Caffe's Data layer reads in order)."""
    with Lmdb(source) as db:
        order = np.random.default_rng(seed).permutation(len(db))[: min(count or len(db), len(db))]
        values = db.values(order)
    return write_records(values, out, sum(len(v) for v in values) + 64 * len(values))
