"""`caffe train` as a child process: result files, NaN detection, crashes, evaluation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_prototxt

from pytrim.datasets import write_lmdb
from pytrim.evaluate import evaluate, topk_hits
from pytrim.train import CaffeCrashed, TrainingDiverged, train

ROOT = Path(__file__).resolve().parents[1]

SMALL_NET = """
name: "small"
layer {{ name: "d" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
        transform_param {{ scale: 0.00390625 }} data_param {{ source: "{train}" batch_size: 16 backend: LMDB }} }}
layer {{ name: "d" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
        transform_param {{ scale: 0.00390625 }} data_param {{ source: "{test}" batch_size: 16 backend: LMDB }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param {{ num_output: 4 kernel_size: 5 stride: 2 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1"
        inner_product_param {{ num_output: 10 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "acc" type: "Accuracy" bottom: "ip1" bottom: "label" top: "accuracy" include {{ phase: TEST }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }}
"""


def make_problem(tmp_path: Path, lr: float = 0.01, n_test: int = 40) -> tuple[Path, Path]:
    """A learnable toy task: the label is the row (of 10 bands) where the image is bright."""
    rng = np.random.default_rng(0)

    def images(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, n).astype(np.uint8)
        imgs = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            imgs[i, 2 + 2 * label : 4 + 2 * label, :] = 250
        return imgs, labels

    train_db = write_lmdb(*images(160), tmp_path / "train_lmdb", progress=False)
    test_db = write_lmdb(*images(n_test), tmp_path / "test_lmdb", progress=False)
    net = write_prototxt(tmp_path / "net.prototxt", SMALL_NET.format(train=train_db, test=test_db))
    solver = write_prototxt(
        tmp_path / "solver.prototxt",
        f'net: "{net}"\ntest_iter: 3\ntest_interval: 1000\nbase_lr: {lr}\nmomentum: 0.9\n'
        'lr_policy: "fixed"\ndisplay: 5\nmax_iter: 60\nsnapshot: 0\nsnapshot_prefix: "unused"\n'
        "solver_mode: CPU\nrandom_seed: 1\n",
    )
    return net, solver


def test_train_then_evaluate(tmp_path: Path) -> None:
    net, solver = make_problem(tmp_path, n_test=37)
    result = train(solver, tmp_path / "out.caffemodel", progress=False)
    assert result.caffemodel.is_file() and result.iterations == 60
    assert result.final_loss < 1.0, result.final_loss
    assert "accuracy" in result.test_outputs
    acc = evaluate(net, result.caffemodel, progress=False)
    assert acc.images == 37  # every test image exactly once, the last batch partial
    assert acc.top1 > 0.8 and acc.top5 is not None and acc.top5 >= acc.top1
    # Fine-tuning from those weights starts from a low loss.
    again = train(solver, tmp_path / "tuned.caffemodel", weights=result.caffemodel, max_iter=5, progress=False)
    assert again.iterations == 5 and again.final_loss < 1.0


def test_nan_loss_stops_training_and_writes_nothing(tmp_path: Path) -> None:
    _, solver = make_problem(tmp_path, lr=1e12)
    with pytest.raises(TrainingDiverged, match="loss became"):
        train(solver, tmp_path / "out.caffemodel", progress=False)
    assert not (tmp_path / "out.caffemodel").exists()


def test_caffe_check_failure_is_reported(tmp_path: Path) -> None:
    net, solver = make_problem(tmp_path)
    net.write_text(net.read_text().replace(str(tmp_path / "train_lmdb"), str(tmp_path / "missing_lmdb")))
    with pytest.raises(CaffeCrashed, match=r"`caffe train` failed"):
        train(solver, tmp_path / "out.caffemodel", progress=False)
    assert not (tmp_path / "out.caffemodel").exists()


def test_topk_hits() -> None:
    scores = np.array([[0.1, 0.9, 0.0, 0, 0, 0], [0.5, 0.1, 0.2, 0.3, 0.4, 0.0]])
    labels = np.array([1, 5])
    assert topk_hits(scores, labels, 1) == 1
    assert topk_hits(scores, labels, 5) == 1
    assert topk_hits(scores, np.array([1, 0]), 1) == 2


def test_lenet_prototxts_have_caffes_431080_parameters(caffe) -> None:
    net = caffe.Net(str(ROOT / "prototxt/lenet/deploy.prototxt"), caffe.TEST)
    widths = [net.params[name][0].data.shape[0] for name in ("conv1", "conv2", "ip1", "ip2")]
    assert widths == [20, 50, 500, 10]
    assert sum(blob.data.size for blobs in net.params.values() for blob in blobs) == 431080


@pytest.mark.parametrize(
    "script", sorted(str(p.relative_to(ROOT)) for p in [*ROOT.glob("tools/*.py"), *ROOT.glob("data/*.py")])
)
def test_tools_have_help(script: str) -> None:
    result = subprocess.run([sys.executable, str(ROOT / script), "--help"], check=False, capture_output=True, text=True)
    assert result.returncode == 0 and "usage:" in result.stdout
