"""The loop beyond LeNet chains: the three Fashion-MNIST benchmark schedules (ResNet, MobileNet
v2-style, SqueezeNet-style: prototxt/*_fm/) run in a shortened form (tiny data, a few solver
iterations, two trimming iterations) with the automated plan; decisions on the net's own
metric (a Euclidean regression net); paired differences; the plan's choices."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, small_body, toy_db, write_net

from pytrim.graph.build import net_graph
from pytrim.graph.queries import neighbours
from pytrim.loop.plan import candidates, split
from pytrim.stats.evaluate import Scores, paired
from pytrim.stats.statsfile import load_stats


def test_paired_difference_and_its_standard_error() -> None:
    base = Scores(np.array([1, 1, 0, 1, 0, 1, 1, 0], float), np.ones(8))
    other = Scores(np.array([1, 0, 0, 1, 1, 1, 1, 0], float), np.ones(8))
    difference, stderr = paired(base, other)
    assert difference == 0.0  # one image lost, one gained
    d = other.values - base.values
    assert stderr == pytest.approx(d.std(ddof=1) / math.sqrt(8))
    # McNemar's: only the discordant images count (b = c = 1 of n = 8)
    assert stderr == pytest.approx(math.sqrt((1 + 1) / 8 - 0) / math.sqrt(7))
    independent = math.sqrt(base.stderr**2 + other.stderr**2)
    assert stderr < independent  # the paired error is the smaller one
    batches = Scores(np.array([0.5, 0.25]), np.array([10.0, 5.0]))  # per-batch units weighted by images
    assert batches.mean == pytest.approx((0.5 * 10 + 0.25 * 5) / 15)


def test_the_automated_plan_starts_high_and_spreads_to_neighbours() -> None:
    touching = {"a": {"b"}, "b": {"a", "c"}, "c": {"b", "d"}, "d": {"c"}}
    apoz = {"a": 0.3, "b": 0.5, "c": 0.9, "d": 0.2}
    first = candidates(1, [], apoz, touching, start=1)
    assert list(first) == ["c"] and "highest mean APoZ 90.0% (rank 1 of 4)" in first["c"]
    plan = split(first, {"c": {"width": 8, "kept": 6}})
    assert plan["trimmed"] == ["c"] and not plan["dropped"]
    second = candidates(2, [{"plan": plan}], apoz, touching, start=1)
    assert list(second) == ["c", "b", "d"] and "adjacent to c" in second["b"]
    plan2 = split(second, {"c": {"width": 6, "kept": 6}, "b": {"width": 8, "kept": 7}, "d": {"width": 4, "kept": 3}})
    assert plan2["trimmed"] == ["b", "d"] and "c" in plan2["dropped"]
    third = candidates(3, [{"plan": plan}, {"plan": plan2}], apoz, touching, start=1)
    assert "c" not in third and "a" in third  # c dropped out for good; a is adjacent to b


def test_the_plan_looks_through_groups_without_a_relu() -> None:
    """MobileNet v2: an expansion touches only linear projections (no ReLU, not offered); the
    expansions beyond them are its neighbours."""
    _, graph = net_graph(ROOT / "prototxt/mobilenet_fm/deploy.prototxt")
    touching = neighbours(graph)
    linear = {name for name in touching if name.endswith("/linear")}
    assert linear and touching["block2_2/expand"] <= linear
    measured = {name: 0.5 for name in touching if name not in linear}
    plan = {"trimmed": ["block2_2/expand"], "dropped": {}}
    second = candidates(2, [{"plan": plan}], measured, touching, start=1)
    assert not linear & set(second) and {"block2_1/expand", "block3_1/expand"} <= set(second)
    assert "through block2_1/linear (no ReLU)" in second["block3_1/expand"]


def test_neighbours_follow_the_channel_graph() -> None:
    _, graph = net_graph(ROOT / "prototxt/resnet_fm/deploy.prototxt")
    touching = neighbours(graph)
    assert set(touching) == {"conv1", "res1_a", "res2_a", "res2_b", "res3_a", "res3_b"}
    assert touching["res1_a"] == {"conv1"}  # conv1's group (with res1_b, joined by the sum) feeds res1_a and back
    assert "res2_a" in touching["conv1"] and "res2_b" in touching["conv1"]  # res2_a and the projection read it
    assert touching["res3_b"] == {"res2_b", "res3_a"}


def tiny_copy(name: str, d: Path) -> Path:
    """The benchmark's prototxts and schedule on tiny data: 28x28 toy images, a few iterations."""
    train, test, val = toy_db(d / "train", 60, 1), toy_db(d / "test", 20, 2), toy_db(d / "val", 20, 3)
    source = ROOT / "prototxt" / name
    for kind in ("train_val", "deploy"):
        text = (source / f"{kind}.prototxt").read_text().replace("data/lenet/train_lmdb", str(train))
        text = re.sub(r"batch_size: \d+", "batch_size: 10", text.replace("data/lenet/test_lmdb", str(test)))
        write_net(d / f"{kind}.prototxt", text)
    for solver in ("solver", "finetune_solver"):
        text = (source / f"{solver}.prototxt").read_text().replace(f"prototxt/{name}/train_val.prototxt",
                                                                   str(d / "train_val.prototxt"))  # fmt: skip
        text = re.sub(r"max_iter: \d+", "max_iter: 8", re.sub(r"stepvalue: \d+", "stepvalue: 6", text))
        write_net(d / f"{solver}.prototxt", re.sub(r"test_iter: \d+", "test_iter: 2", text))
    schedule = (source / "trim.toml").read_text()
    for key, value in (("net", d / "train_val.prototxt"), ("deploy", d / "deploy.prototxt"),
                       ("weights", d / "base.caffemodel"), ("baseline_solver", d / "solver.prototxt"),
                       ("finetune_solver", d / "finetune_solver.prototxt"), ("out", d / "run"),
                       ("val_data", val), ("stats_data", val)):  # fmt: skip
        schedule = re.sub(rf'^{key} = "[^"]*"', f'{key} = "{value}"', schedule, flags=re.M)
    schedule = re.sub(r"^iterations = \d+", "iterations = 2", schedule, flags=re.M)
    schedule = re.sub(r"^tolerance = \S+", "tolerance = 100.0", schedule, flags=re.M)
    schedule = re.sub(r"^finetune_iters = \d+", "finetune_iters = 4", schedule, flags=re.M)
    schedule = re.sub(r"^eval_every = \d+", "eval_every = 2", schedule, flags=re.M)  # snapshots scored at 2 and 4
    schedule = re.sub(r"^max_finetune_iters = \d+", "max_finetune_iters = 8", schedule, flags=re.M)
    schedule = re.sub(r"^scratch = \w+", "scratch = true", schedule, flags=re.M)  # the ablation on these topologies
    return write_net(d / "trim.toml", schedule + "\n")


@pytest.mark.parametrize("name", ["resnet_fm", "seresnet_fm", "mobilenet_fm", "squeezenet_fm", "densenet_fm"])
def test_the_benchmark_schedules_run_shortened(name: str, tmp_path: Path) -> None:
    schedule = tiny_copy(name, tmp_path)
    command = [sys.executable, "-m", "pytrim", "trim", "--quiet", "--schedule", str(schedule)]
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "run/report.json").read_text())
    first = report["iterations"][0]
    assert len(first["plan"]["trimmed"]) >= 1 and all("mean APoZ" in why for why in first["plan"]["why"].values())
    assert first["verify_max_relative_diff"] <= 1e-5 and first["params"] < report["baseline"]["params"]
    assert first["cost"]["macs_ratio"] > 1 and math.isfinite(first["difference_stderr"])
    assert [p["iteration"] for p in first["retraining"]["validation"]] == [2, 4]  # snapshots scored on validation
    assert report["scratch"]["widths"] == report["final"]["widths"] or report["final"]["iteration"] == 0
    for entry in report["iterations"]:  # the plan offers only groups measured after a ReLU (APoZ's domain)
        stats = load_stats(tmp_path / f"run/iter-{entry['iteration']:02d}/stats.h5")
        assert all(stats.find(name).relu for name in entry["plan"]["trimmed"]), entry["plan"]
    if name == "seresnet_fm":  # each excitation's expansion is cut with the channels it scales
        assert any("res1_se_up" in stats.layers[group].members for group in stats.layers), list(stats.layers)
    if name == "mobilenet_fm":  # its linear projections have no ReLU: measured, never offered
        linear = [group for group in stats.layers if group.endswith("/linear")]
        assert linear and not any(stats.find(group).relu for group in linear)


EUCLIDEAN = """name = "regression"
net = "{d}/train_val.prototxt"
weights = "{d}/base.caffemodel"
train_missing_weights = true
baseline_solver = "{d}/solver.prototxt"
finetune_solver = "{d}/solver.prototxt"
out = "{d}/run"
iterations = 2
tolerance = 1000.0
metric = "loss"
lower_is_better = true
val_data = "{d}/val"
scratch = false

[trim]
layers = ["conv2", "ip1"]
rule = "ratio"
ratio = 0.25
finetune_iters = 10
"""


def regression_body(n, data):
    from caffe import layers as L

    small_body(n, data)
    n.score = L.InnerProduct(n.drop3, num_output=1, weight_filler={"type": "xavier"})
    return n.score


def test_decisions_on_a_loss_for_a_net_without_accuracy(caffe, tmp_path: Path) -> None:
    import caffe as c
    from caffe import layers as L

    train, test = toy_db(tmp_path / "train", 60, 1), toy_db(tmp_path / "test", 20, 2)
    toy_db(tmp_path / "val", 20, 3)
    n = c.NetSpec()
    n.data, n.label = L.Data(
        ntop=2,
        transform_param={"scale": 1 / 256},
        data_param={"source": str(train), "batch_size": 10, "backend": 1},
        include={"phase": 0},
    )
    top = regression_body(n, n.data)
    n.loss = L.EuclideanLoss(top, n.label)
    proto = n.to_proto()
    test_layer = proto.layer.add()
    test_layer.CopyFrom(proto.layer[0])
    test_layer.data_param.source, test_layer.include[0].phase = str(test), 1
    proto.layer.insert(1, test_layer)
    del proto.layer[-1]
    write_net(tmp_path / "train_val.prototxt", str(proto))
    write_net(tmp_path / "solver.prototxt", f'net: "{tmp_path / "train_val.prototxt"}"\nbase_lr: 0.001\n'
              'momentum: 0.9\nlr_policy: "fixed"\nmax_iter: 20\nsnapshot: 0\nsolver_mode: CPU\nrandom_seed: 2\n'
              'test_iter: 2\ntest_interval: 100000\n')  # fmt: skip
    write_net(tmp_path / "trim.toml", EUCLIDEAN.format(d=tmp_path))
    command = [sys.executable, "-m", "pytrim", "trim", "--quiet", "--schedule", str(tmp_path / "trim.toml")]
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "run/report.json").read_text())
    assert report["metric"] == "loss" and report["baseline"]["top1"] is None and report["baseline"]["value"] > 0
    for entry in report["iterations"]:
        assert entry["value"] > 0 and math.isfinite(entry["difference_stderr"]) and entry["accepted"]
    assert "loss after retraining" in (tmp_path / "run/report.md").read_text()
    # The same net and schedule deciding on accuracy, which it has not: one line, before any work.
    on_accuracy = EUCLIDEAN.format(d=tmp_path).replace('metric = "loss"\nlower_is_better = true\n', "")
    (tmp_path / "acc.toml").write_text(on_accuracy.replace(f'"{tmp_path}/run"', f'"{tmp_path / "acc"}"'))
    again = subprocess.run([*command[:-1], str(tmp_path / "acc.toml")], check=False, capture_output=True, text=True,
                           cwd=ROOT)  # fmt: skip
    assert_one_line_error(again, "no Accuracy or SoftmaxWithLoss layer")
    assert not (tmp_path / "acc").exists()
