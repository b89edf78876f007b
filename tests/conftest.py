"""Shared fixtures and builders: real pycaffe, tiny nets built with Caffe's NetSpec, tiny
generated datasets, and a helper to run pytrim's commands as a user does."""

from __future__ import annotations

import gzip
import re
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytrim.caffeio.env import caffe_child_env, caffe_pb2, caffe_tool, load_caffe
from pytrim.caffeio.lmdb import write_datums as write_lmdb
from pytrim.core.runner import run_child
from pytrim.stats.statsnet import PREFIX_FRAC

ROOT = Path(__file__).resolve().parents[1]
FILL = {"weight_filler": {"type": "gaussian", "std": 0.3}, "bias_filler": {"type": "gaussian", "std": 0.2}}


@pytest.fixture(scope="session")
def caffe():
    """pycaffe in CPU mode (the build from `make caffe`)."""
    return load_caffe()


# --- data ---------------------------------------------------------------------------------


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


def toy_images(n: int, seed: int = 0, side: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """A learnable toy task: the label is the band of rows where the image is bright."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, side, side)).astype(np.uint8)
    for i, label in enumerate(labels):
        images[i, 2 + 2 * label : 4 + 2 * label, :] = 250
    return images, labels


def toy_db(path: Path, n: int, seed: int = 0, side: int = 28) -> Path:
    return write_lmdb(*toy_images(n, seed, side), path, progress=False)


# --- nets with NetSpec ----------------------------------------------------------------------


def small_body(n: Any, data: Any) -> Any:
    """conv1 -> ReLU (in place) -> conv2 -> ReLU (own top) -> pool -> ip1 -> ReLU + Dropout
    (in place) -> ip2: conv->conv, conv->pool->fc and fc->fc in one net."""
    from caffe import layers as L
    from caffe import params as P

    n.conv1 = L.Convolution(data, num_output=6, kernel_size=3, **FILL)
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.conv2 = L.Convolution(n.relu1, num_output=8, kernel_size=3, stride=2, **FILL)
    n.relu2 = L.ReLU(n.conv2)
    n.pool2 = L.Pooling(n.relu2, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.ip1 = L.InnerProduct(n.pool2, num_output=12, **FILL)
    n.relu3 = L.ReLU(n.ip1, in_place=True)
    n.drop3 = L.Dropout(n.relu3, dropout_ratio=0.5, in_place=True)
    n.ip2 = L.InnerProduct(n.drop3, num_output=10, **FILL)
    return n.ip2


def data_layers(train: Path, test: Path, batch: int, scale: float = 1 / 256) -> list[Any]:
    """Two LMDB Data layers named "d", tops data and label, for the TRAIN and TEST phases."""
    import caffe
    from caffe import layers as L
    from caffe import params as P

    layers = []
    for phase, source in ((caffe.TRAIN, train), (caffe.TEST, test)):
        n = caffe.NetSpec()
        n.data, n.label = L.Data(
            name="d",
            ntop=2,
            include={"phase": phase},
            transform_param={"scale": scale},
            data_param={"source": str(source), "batch_size": batch, "backend": P.Data.LMDB},
        )
        layers += list(n.to_proto().layer)
    return layers


def net_text(
    body: Callable[[Any, Any], Any],
    shape: list[int],
    data: tuple[Path, Path, int] | None = None,
    name: str = "net",
    loss: bool = True,
) -> str:
    """A prototxt: `body` on an Input of `shape` (deploy), or on two LMDB Data layers
    `data` = (train, test, batch) with Accuracy and SoftmaxWithLoss on its output (train_val)."""
    import caffe
    from caffe import layers as L

    n = caffe.NetSpec()
    n.data = L.Input(shape={"dim": shape})
    if data is not None:
        n.label = L.Input(shape={"dim": shape[:1]})
    top = body(n, n.data)
    if data is not None and loss:
        n.accuracy = L.Accuracy(top, n.label, include={"phase": caffe.TEST})
        n.loss = L.SoftmaxWithLoss(top, n.label)
    proto = n.to_proto()
    proto.name = name
    if data is not None:
        rest = list(proto.layer)[2:]
        del proto.layer[:]
        proto.layer.extend(data_layers(*data) + rest)
    return str(proto)


def write_net(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def filler_weights(caffe: Any, net: Path, out: Path, seed: int = 1701) -> Path:
    """The prototxt's own fillers, seeded, saved as a caffemodel."""
    caffe.set_random_seed(seed)
    caffe.Net(str(net), caffe.TEST).save(str(out))
    return out


@pytest.fixture
def small_net(caffe, tmp_path: Path) -> dict[str, Path]:
    """train_val + deploy + filler caffemodel of the small net, on 25 toy images, batch 10."""
    db = toy_db(tmp_path / "db", 25)
    train_val = write_net(tmp_path / "train_val.prototxt", net_text(small_body, [10, 1, 28, 28], (db, db, 10)))
    deploy = write_net(tmp_path / "deploy.prototxt", net_text(small_body, [4, 1, 28, 28]))
    weights = filler_weights(caffe, train_val, tmp_path / "small.caffemodel")
    return {"net": train_val, "deploy": deploy, "weights": weights, "db": db, "dir": tmp_path}


# --- running commands -----------------------------------------------------------------------


def pytrim(*args: str, cwd: Path = ROOT, **kw: Any) -> subprocess.CompletedProcess:
    """Run `python -m pytrim <command> ...` as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "pytrim", *map(str, args)], capture_output=True, text=True, cwd=cwd, check=False, **kw
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str, code: int = 1) -> None:
    """Exit code 1 (2: a usage error, an option argparse refuses) and exactly one `error:`
    line naming the problem: no traceback, and none of Caffe's own fatal log lines (they
    would mean Caffe aborted in front of the user)."""
    err = result.stderr
    assert result.returncode == code, (result.returncode, err[-3000:])
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err[-3000:]
    assert "Traceback" not in err and not re.search(r"^F\d{4,8} ", err, re.M), err[-3000:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


def files_under(folder: Path) -> list[str]:
    """Relative paths of every file under `folder` (empty when it does not exist)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --- test-only helpers (not part of the library) ----------------------------------------------


def read_model(path: Path) -> Any:
    """A (small) caffemodel parsed whole by protobuf (the library streams them: pytrim.caffeio.caffemodel)."""
    model = caffe_pb2().NetParameter()
    model.ParseFromString(Path(path).read_bytes())
    return model


def write_model(model: Any, path: Path) -> Path:
    """A NetParameter written as a binary caffemodel."""
    Path(path).write_bytes(model.SerializeToString())
    return Path(path)


def learnable_params(net: Any) -> int:
    """Learnable parameters of a pycaffe Net: every blob of every layer but BatchNorm's statistics."""
    kept = [blobs for name, blobs in net.params.items() if net.layer_dict[name].type != "BatchNorm"]
    return sum(blob.data.size for blobs in kept for blob in blobs)


def caffe_test_fractions(stats_prototxt: Path, weights: Path, iterations: int, log: Path) -> dict[str, np.ndarray]:
    """Run Caffe's own `caffe test` on a statistics net (pytrim.stats.statsnet); per measured
    blob the mean non-zero fraction of each (image slot, channel) element over the iterations,
    as Caffe prints them (six significant digits)."""

    args = [caffe_tool("caffe"), "test", f"--model={stats_prototxt}", f"--weights={weights}",
            f"--iterations={iterations}"]  # fmt: skip
    run_child(args, log, "caffe test", env=caffe_child_env())
    values: dict[str, list[float]] = {}
    for line in log.read_text().splitlines():
        match = re.search(r"\] (pytrim_frac_\S+) = (\S+)", line)
        if match and "Batch " not in line:
            values.setdefault(match.group(1)[len(PREFIX_FRAC) :], []).append(float(match.group(2)))
    return {name: np.asarray(v) for name, v in values.items()}
