"""IDX reading, MNIST download, and LMDBs that Caffe's own Data layer reads back."""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import make_idx_dataset, write_idx, write_net

from pytrim.caffeio.env import caffe_pb2
from pytrim.caffeio.lmdb import entries as lmdb_entries
from pytrim.caffeio.lmdb import sample_lmdb
from pytrim.caffeio.lmdb import write_datums as write_lmdb
from pytrim.cli import run_command
from pytrim.core.errors import DatasetError
from pytrim.feeds.datasets import FASHION_MNIST_DIR, MNIST_MD5, download_mnist, read_idx, read_split


def reader(path: Path, source: Path, batch: int) -> Path:
    """A net that is only a TEST Data layer reading `source` (no scaling)."""
    import caffe
    from caffe import layers as L
    from caffe import params as P

    n = caffe.NetSpec()
    n.data, n.label = L.Data(
        name="d", ntop=2, include={"phase": caffe.TEST}, data_param={"source": str(source), "batch_size": batch,
                                                                      "backend": P.Data.LMDB}
    )  # fmt: skip
    return write_net(path, str(n.to_proto()))


def test_idx_roundtrip_plain_and_gzip(tmp_path: Path) -> None:
    images = np.arange(2 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(2, 28, 28)
    for compress in (True, False):
        path = write_idx(tmp_path / f"img{compress}", images, compress=compress)
        np.testing.assert_array_equal(read_idx(path, 0x803), images)


@pytest.mark.parametrize(
    "magic",
    [0x00000901, 0x12340803, 0x00000800, 0x00000D03],  # wrong type, non-zero lead, 0 axes, float
)
def test_idx_rejects_bad_magic(tmp_path: Path, magic: int) -> None:
    path = tmp_path / "bad"
    path.write_bytes(struct.pack(">II", magic, 1) + b"\x00")
    with pytest.raises(DatasetError, match="magic"):
        read_idx(path)


def test_idx_rejects_labels_where_images_expected(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "labels.gz", np.zeros(4, np.uint8))
    with pytest.raises(DatasetError, match="expected 0x00000803"):
        read_idx(path, 0x803)


def test_idx_rejects_short_and_long_files(tmp_path: Path) -> None:
    good = struct.pack(">IIII", 0x803, 3, 28, 28) + bytes(3 * 28 * 28)
    (tmp_path / "short").write_bytes(good[:-1])
    (tmp_path / "long").write_bytes(good + b"\x00")
    (tmp_path / "header").write_bytes(good[:10])
    (tmp_path / "tiny").write_bytes(b"\x00\x00")
    with pytest.raises(DatasetError, match="truncated: shape"):
        read_idx(tmp_path / "short")
    with pytest.raises(DatasetError, match="trailing bytes"):
        read_idx(tmp_path / "long")
    with pytest.raises(DatasetError, match="truncated IDX header"):
        read_idx(tmp_path / "header")
    with pytest.raises(DatasetError, match="too short"):
        read_idx(tmp_path / "tiny")
    # A gzip stream cut in the middle is reported as such.
    (tmp_path / "cut.gz").write_bytes(gzip.compress(good)[:-20])
    with pytest.raises(DatasetError, match="gzip"):
        read_idx(tmp_path / "cut.gz")


def test_read_split_checks_counts(tmp_path: Path) -> None:
    directory = make_idx_dataset(tmp_path / "d", n_train=10, n_test=5)
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    assert read_split(directory, "train").images.shape == (10, 28, 28)
    with pytest.raises(DatasetError, match="5 images but 4 labels"):
        read_split(directory, "test")


def test_lmdb_is_read_by_caffe_data_layer(caffe, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 12, dtype=np.uint8)
    db = write_lmdb(images, labels, tmp_path / "db", progress=False)
    assert lmdb_entries(db) == 12
    assert not (tmp_path / "db.partial").exists()
    proto = reader(tmp_path / "read.prototxt", db, 6)
    net = caffe.Net(str(proto), caffe.TEST)
    for batch in range(2):
        net.forward()
        sl = slice(batch * 6, batch * 6 + 6)
        np.testing.assert_array_equal(net.blobs["data"].data[:, 0], images[sl].astype(np.float32))
        np.testing.assert_array_equal(net.blobs["label"].data, labels[sl].astype(np.float32))


def test_failed_lmdb_write_leaves_nothing(tmp_path: Path) -> None:
    images = np.zeros((3, 28, 28), np.uint8)
    with pytest.raises(ValueError):
        write_lmdb(images, np.zeros(2, np.uint8), tmp_path / "db", progress=False)  # length mismatch
    assert list(tmp_path.iterdir()) == []


def test_download_mnist_from_file_url(tmp_path: Path) -> None:
    mirror = make_idx_dataset(tmp_path / "mirror", n_train=8, n_test=4)
    sums = {name: hashlib.md5((mirror / name).read_bytes()).hexdigest() for name in MNIST_MD5}
    dest = download_mnist(tmp_path / "raw", base_url=mirror.as_uri(), checksums=sums)
    assert sorted(p.name for p in dest.iterdir()) == sorted(MNIST_MD5)
    assert read_split(dest, "test").labels.shape == (4,)
    # Already present with the right checksum: kept, no new download (the mirror may vanish).
    (mirror / "train-images-idx3-ubyte.gz").unlink()
    download_mnist(dest, base_url=mirror.as_uri(), checksums=sums)


def test_download_rejects_wrong_checksum_and_leaves_nothing(tmp_path: Path) -> None:
    mirror = make_idx_dataset(tmp_path / "mirror", n_train=8, n_test=4)
    # The published MNIST sums cannot match these generated files.
    with pytest.raises(DatasetError, match="does not match the published"):
        download_mnist(tmp_path / "raw", base_url=mirror.as_uri())
    assert list((tmp_path / "raw").iterdir()) == []
    with pytest.raises(DatasetError, match="failed"):
        download_mnist(tmp_path / "raw2", base_url=(tmp_path / "nowhere").as_uri())


def test_prepare_lenet_writes_lmdbs_and_refuses_bad_input(caffe, tmp_path: Path) -> None:
    source = make_idx_dataset(tmp_path / "idx", n_train=20, n_test=10)
    out = tmp_path / "lenet"
    args = ["--dataset", "mnist", "--from", str(source), "--out", str(out), "--quiet", "--val-images", "5"]
    assert run_command("prepare-lenet", args) == 0
    assert lmdb_entries(out / "train_lmdb") == 15 and lmdb_entries(out / "test_lmdb") == 10
    assert lmdb_entries(out / "val_lmdb") == 5  # the last 5 training images, held out
    train = read_split(source, "train")
    assert labels_of(out / "val_lmdb") == train.labels[15:].tolist()
    assert labels_of(out / "train_lmdb") == train.labels[:15].tolist()
    assert json.loads((out / "SOURCE.json").read_text())["dataset"] == "mnist"
    # A truncated test file: clear error, and no LMDB written at all.
    bad = make_idx_dataset(tmp_path / "bad", n_train=20, n_test=10)
    raw = (bad / "t10k-images-idx3-ubyte.gz").read_bytes()
    (bad / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(gzip.decompress(raw)[:-100]))
    out2 = tmp_path / "lenet2"
    with pytest.raises(DatasetError, match="truncated"):
        run_command("prepare-lenet", ["--dataset", "mnist", "--from", str(bad), "--out", str(out2), "--quiet"])
    assert not out2.exists() or list(out2.iterdir()) == []


def labels_of(db: Path) -> list[int]:
    import lmdb

    with lmdb.open(str(db), readonly=True, lock=False) as env, env.begin() as txn:
        return [caffe_pb2().Datum.FromString(v).label for _, v in txn.cursor()]


def test_sample_lmdb_is_seeded_and_random(tmp_path: Path) -> None:
    labels = np.arange(50, dtype=np.uint8)
    db = write_lmdb(np.zeros((50, 2, 2), np.uint8), labels, tmp_path / "db", progress=False)
    a = labels_of(sample_lmdb(db, tmp_path / "a", 10, seed=1))
    assert len(a) == 10 == len(set(a)) and a != sorted(a)  # a random sample, in a random order
    assert labels_of(sample_lmdb(db, tmp_path / "b", 10, seed=1)) == a
    assert labels_of(sample_lmdb(db, tmp_path / "c", 10, seed=2)) != a
    assert len(labels_of(sample_lmdb(db, tmp_path / "d", 500, seed=1))) == 50


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist_is_complete() -> None:
    train, test = read_split(FASHION_MNIST_DIR, "train"), read_split(FASHION_MNIST_DIR, "test")
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert np.bincount(test.labels).tolist() == [1000] * 10
