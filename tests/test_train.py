"""`caffe train` as a child process: result files, NaN detection, crashes, evaluation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, net_text, toy_db, write_net

from pytrim.cli import COMMANDS
from pytrim.core.errors import CaffeCrashed, TrainingDiverged
from pytrim.retrain.solver import train
from pytrim.stats.evaluate import evaluate, topk_hits


def train_body(n, data):
    from caffe import layers as L

    xavier = {"type": "xavier"}
    n.conv1 = L.Convolution(data, num_output=4, kernel_size=5, stride=2, weight_filler=xavier)
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.ip1 = L.InnerProduct(n.relu1, num_output=10, weight_filler=xavier)
    return n.ip1


def make_problem(tmp_path: Path, lr: float = 0.01, n_test: int = 40) -> tuple[Path, Path]:
    """The toy task (label = the bright band of rows), a small net and a fixed-rate solver."""
    train_db = toy_db(tmp_path / "train_lmdb", 160, seed=0)
    test_db = toy_db(tmp_path / "test_lmdb", n_test, seed=1)
    net = write_net(tmp_path / "net.prototxt", net_text(train_body, [16, 1, 28, 28], (train_db, test_db, 16)))
    solver = write_net(
        tmp_path / "solver.prototxt",
        f'net: "{net}"\ntest_iter: 3\ntest_interval: 30\nbase_lr: {lr}\nmomentum: 0.9\n'
        'lr_policy: "fixed"\ndisplay: 5\nmax_iter: 60\nsnapshot: 0\nsnapshot_prefix: "unused"\n'
        "solver_mode: CPU\nrandom_seed: 1\n",
    )
    return net, solver


def test_train_then_evaluate(tmp_path: Path) -> None:
    net, solver = make_problem(tmp_path, n_test=37)
    result = train(solver, tmp_path / "out.caffemodel", progress=False)
    assert result.caffemodel.is_file() and result.iterations == 60
    assert result.final_loss < 1.0, result.final_loss
    assert set(result.tests) == {0, 30, 60} and 0 <= result.tests[60]["accuracy"] <= 1  # test_interval 30
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
    with pytest.raises(CaffeCrashed, match=r"caffe train failed .*Check failed|caffe train failed .*mdb_env_open"):
        train(solver, tmp_path / "out.caffemodel", progress=False)
    assert not (tmp_path / "out.caffemodel").exists()


def test_topk_hits() -> None:
    scores = np.array([[0.1, 0.9, 0.0, 0, 0, 0], [0.5, 0.1, 0.2, 0.3, 0.4, 0.0]])
    labels = np.array([1, 5])
    assert topk_hits(scores, labels, 1).sum() == 1
    assert topk_hits(scores, labels, 5).sum() == 1
    assert topk_hits(scores, np.array([1, 0]), 1).sum() == 2


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


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_commands_have_help(command: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytrim", command, "--help"], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0 and "usage:" in result.stdout
    listing = subprocess.run([sys.executable, "-m", "pytrim", "--help"], check=False, capture_output=True, text=True)
    assert command in listing.stdout
