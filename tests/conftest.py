"""Shared fixtures: real pycaffe, tiny inline nets and tiny generated datasets."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from pytrim.caffe_env import load_caffe


@pytest.fixture(scope="session")
def caffe():
    """pycaffe in CPU mode (the build from `make caffe`)."""
    return load_caffe()


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """Write an unsigned-byte IDX file, as MNIST's files are."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def make_idx_dataset(directory: Path, n_train: int = 64, n_test: int = 32, seed: int = 0) -> Path:
    """An MNIST-shaped folder of four .gz IDX files with random images and labels."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8))
    return directory


@pytest.fixture
def idx_dataset(tmp_path: Path) -> Path:
    return make_idx_dataset(tmp_path / "idx")


def write_prototxt(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
