"""The whole trimming loop on a tiny net: report keys, resume, and a crash that loses nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_prototxt
from test_trimming import BODY, DATA, DEPLOY_INPUT, LOSS, images

from pytrim.datasets import write_lmdb

ROOT = Path(__file__).resolve().parents[1]

SOLVER = """net: "{net}"
test_iter: 1
test_interval: 100000
base_lr: {lr}
momentum: 0.9
weight_decay: 0.0005
lr_policy: "fixed"
display: 10
max_iter: 40
snapshot: 0
snapshot_prefix: "unused"
solver_mode: CPU
random_seed: 3
"""

SCHEDULE = """name = "tiny"
net = "{d}/train_val.prototxt"
deploy = "{d}/deploy.prototxt"
weights = "{d}/baseline.caffemodel"
baseline_solver = "{d}/solver.prototxt"
finetune_solver = "{d}/finetune.prototxt"
out = "{d}/run"
iterations = 2
tolerance = 100.0
scratch_iters = 30

[trim]
layers = ["conv2", "ip1"]
rule = "ratio"
ratio = 0.25
finetune_iters = 20
min_keep = {{ conv2 = 2, ip1 = 2 }}
"""


@pytest.fixture
def problem(tmp_path: Path) -> Path:
    db_train = write_lmdb(*images(120, seed=1), tmp_path / "train_db", progress=False)
    db_test = write_lmdb(*images(40, seed=2), tmp_path / "test_db", progress=False)
    train_val = 'name: "tiny"\n' + DATA.format(train=db_train, test=db_test, batch=20)
    write_prototxt(tmp_path / "train_val.prototxt", train_val + BODY + LOSS)
    write_prototxt(tmp_path / "deploy.prototxt", 'name: "tiny"\n' + DEPLOY_INPUT + BODY)
    write_prototxt(tmp_path / "solver.prototxt", SOLVER.format(net=tmp_path / "train_val.prototxt", lr=0.01))
    write_prototxt(tmp_path / "finetune.prototxt", SOLVER.format(net=tmp_path / "train_val.prototxt", lr=0.005))
    write_prototxt(tmp_path / "schedule.toml", SCHEDULE.format(d=tmp_path))
    return tmp_path


def trim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools/trim.py"), "--quiet", *args], capture_output=True, text=True, check=False
    )


def test_tiny_loop_writes_report_and_resumes(problem: Path) -> None:
    result = trim("--schedule", str(problem / "schedule.toml"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "baseline.caffemodel missing, training it" in result.stdout
    report = json.loads((problem / "run/report.json").read_text())
    assert set(report["baseline"]) >= {"widths", "params", "top1"}
    assert report["baseline"]["widths"] == "6-8-12-10"
    assert len(report["iterations"]) == 2
    for entry in report["iterations"]:
        assert set(entry) >= {
            "iteration",
            "widths",
            "params",
            "compression",
            "top1_trimmed",
            "top1_retrained",
            "mean_apoz",
        }
        assert set(entry["mean_apoz"]) == {"conv1", "conv2", "ip1"}
        assert entry["verify_max_relative_diff"] <= 1e-5
    # 25% of conv2 and ip1 each iteration: 8 -> 6 -> 5 and 12 -> 9 -> 7.
    assert [e["widths"] for e in report["iterations"]] == ["6-6-9-10", "6-5-7-10"]
    first, second = report["iterations"]
    assert report["baseline"]["params"] > first["params"] > second["params"]
    assert second["compression"] == pytest.approx(report["baseline"]["params"] / second["params"], rel=1e-3)
    assert set(report["scratch"]) >= {"widths", "params", "top1"}
    assert report["scratch"]["widths"] == "6-5-7-10" and report["scratch"]["params"] == second["params"]
    assert "| Trim-2 | 6-5-7-10 |" in (problem / "run/report.md").read_text()
    for name in (
        "stats.h5",
        "selection.json",
        "train_val.prototxt",
        "deploy.prototxt",
        "trimmed.caffemodel",
        "retrained.caffemodel",
        "apoz_conv2.png",
    ):
        assert (problem / "run/iter-01" / name).is_file(), name

    # Asking for a third iteration resumes: iterations 1 and 2 are not redone.
    stamp = (problem / "run/iter-02/retrained.caffemodel").stat().st_mtime_ns
    result = trim("--schedule", str(problem / "schedule.toml"), "--iterations", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming" in result.stdout
    assert (problem / "run/iter-02/retrained.caffemodel").stat().st_mtime_ns == stamp
    report = json.loads((problem / "run/report.json").read_text())
    assert [e["iteration"] for e in report["iterations"]] == [1, 2, 3]
    # Other baseline weights: the old state is not silently reused.
    (problem / "baseline.caffemodel").write_bytes((problem / "run/iter-01/retrained.caffemodel").read_bytes())
    result = trim("--schedule", str(problem / "schedule.toml"))
    assert result.returncode == 1 and "other baseline weights" in result.stderr


def test_crash_in_retraining_keeps_finished_steps(problem: Path) -> None:
    # A fine-tuning solver that diverges even at 1/100 of its learning rate.
    finetune = problem / "finetune.prototxt"
    finetune.write_text(SOLVER.format(net=problem / "train_val.prototxt", lr=1e15))
    result = trim("--schedule", str(problem / "schedule.toml"), "--no-scratch")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "diverged three times" in result.stderr
    state = json.loads((problem / "run/state.json").read_text())
    record = state["iterations"][0]
    assert {"collect", "select", "cut", "verify", "evaluate_trimmed"} <= set(record)
    assert "retrain" not in record
    collected_in = record["seconds"]["collect"]
    # Fixed solver: the run resumes at the retraining, without collecting again.
    finetune.write_text(SOLVER.format(net=problem / "train_val.prototxt", lr=0.005))
    result = trim("--schedule", str(problem / "schedule.toml"), "--no-scratch", "--iterations", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((problem / "run/state.json").read_text())
    assert state["iterations"][0]["seconds"]["collect"] == collected_in
    assert "top1_retrained" in state["iterations"][0]


def test_schedule_errors_are_one_line(problem: Path) -> None:
    bad = problem / "bad.toml"
    bad.write_text('net = "x"\n[trim]\nlayers = ["conv2"]\n')
    result = trim("--schedule", str(bad))
    assert result.returncode == 1 and result.stderr.startswith("error: ") and "missing keys" in result.stderr
    result = trim("--schedule", str(problem / "nothing.toml"))
    assert result.returncode == 1 and "schedule file not found" in result.stderr


def test_loop_with_another_criterion(problem: Path) -> None:
    """The same loop with the L1 criterion: the removed neurons are the lowest-L1 ones."""
    result = trim(
        "--schedule", str(problem / "schedule.toml"), "--criterion", "l1", "--iterations", "1", "--no-scratch"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from pytrim.caffemodel import Caffemodel

    chosen = json.loads((problem / "run/iter-01/selection.json").read_text())["layers"]
    with Caffemodel(problem / "baseline.caffemodel") as model:
        for entry in chosen:
            w = model.arrays(entry["layer"])[0]
            l1 = np.abs(w.reshape(w.shape[0], -1)).sum(axis=1)
            assert sorted(entry["remove"]) == sorted(np.argsort(l1)[: len(entry["remove"])].tolist())
    report = json.loads((problem / "run/report.json").read_text())
    assert report["iterations"][0]["widths"] == "6-6-9-10"
    assert report["iterations"][0]["verify_max_relative_diff"] <= 1e-5
    bad = trim("--schedule", str(problem / "schedule.toml"), "--criterion", "nope", "--out", str(problem / "x"))
    assert bad.returncode == 1 and "unknown criterion 'nope'" in bad.stderr
