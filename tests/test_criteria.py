"""Each criterion on a hand-made layer gives the hand-computed scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import pytrim

from pytrim.core.errors import StepFailed
from pytrim.criteria.scores import magnitude_mask, unit_scores
from pytrim.experiments.pruners import relief_prune
from pytrim.experiments.sweep import run_comparison
from pytrim.experiments.sweep_report import plot
from pytrim.experiments.sweep_tasks import Data, NetFiles, Settings, Task, all_tasks, prepare
from pytrim.stats.layer_data import LayerData, collect_layer_data

# 3 neurons, 4 inputs.
W = np.array([[1.0, -2.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5], [-4.0, 0.0, 0.0, 0.0]])
B = np.array([0.0, 2.0, -1.0])


def test_apoz_mean_activation_l1() -> None:
    layer = LayerData(
        W, B, zeros=np.array([5, 0, 10]), positions=2, images=5, activation_sum=np.array([1.0, 20.0, 0.0])
    )
    np.testing.assert_allclose(unit_scores("apoz", layer), [0.5, 0.0, 1.0])
    np.testing.assert_allclose(unit_scores("mean_activation", layer), [-0.1, -2.0, -0.0])
    np.testing.assert_allclose(unit_scores("l1", layer), [-4.0, -2.0, -4.0])


def test_taylor_is_l2_normalised_per_layer() -> None:
    layer = LayerData(W, taylor=np.array([3.0, 0.0, 4.0]), images=2)
    np.testing.assert_allclose(unit_scores("taylor", layer), [-0.6, 0.0, -0.8])  # (1.5, 0, 2) / 2.5


def test_random_is_seeded() -> None:
    layer = LayerData(W)
    np.testing.assert_array_equal(unit_scores("random", layer, seed=3), unit_scores("random", layer, seed=3))
    assert not np.array_equal(unit_scores("random", layer, seed=3), unit_scores("random", layer, seed=4))
    with pytest.raises(ValueError, match="unknown unit criterion"):
        unit_scores("nope", layer)


def test_magnitude_threshold_is_quality_times_std() -> None:
    std = W.std()  # 1.4361...
    np.testing.assert_array_equal(magnitude_mask(W, 0.5), np.abs(W) > 0.5 * std)
    assert magnitude_mask(W, 0.5).sum() == 4  # |w| > 0.718: 1, -2, 1, -4
    assert magnitude_mask(W, 2.0).tolist() == [[False] * 4, [False] * 4, [True, False, False, False]]


# --- with Caffe -------------------------------------------------------------------------------


def test_layer_data_matches_brute_force(caffe, small_net: dict[str, Path]) -> None:
    data = collect_layer_data(small_net["net"], small_net["weights"], ["conv2", "ip1"], images=20, taylor=True)
    net = caffe.Net(str(small_net["net"]), str(small_net["weights"]), caffe.TEST)
    acts, grads, inputs, fc_inputs, conv2 = [], [], [], [], []
    for _ in range(2):
        net.forward()
        net.backward()
        conv2.append(net.blobs["relu2"].data.copy())
        acts.append(net.blobs["ip1"].data.copy())
        grads.append(net.blobs["ip1"].diff.copy())
        inputs.append(np.abs(net.blobs["conv1"].data).mean(axis=(2, 3)))
        fc_inputs.append(np.abs(net.blobs["pool2"].data).reshape(10, -1))
    a, g = np.concatenate(acts), np.concatenate(grads)
    np.testing.assert_allclose(data["ip1"].activation_sum, np.maximum(a, 0).sum(axis=0), rtol=1e-5)
    np.testing.assert_allclose(data["ip1"].taylor, np.abs(a * g).sum(axis=0), rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(data["conv2"].input_abs_mean, np.concatenate(inputs).mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(data["ip1"].input_abs_mean, np.concatenate(fc_inputs).mean(axis=0), rtol=1e-5)
    # Statistics come per image and position (M = 144 for conv2): APoZ is the brute-force one.
    assert data["ip1"].images == 20 and data["conv2"].positions == 1
    np.testing.assert_allclose(unit_scores("apoz", data["conv2"]), (np.concatenate(conv2) <= 0).mean(axis=(0, 2, 3)))


def test_masked_weights_stay_zero_through_solver_steps(caffe, small_net: dict[str, Path]) -> None:
    d = small_net["dir"]
    solver = d / "solver.prototxt"
    solver.write_text(
        f'net: "{small_net["net"]}"\nbase_lr: 0.05\nmomentum: 0.9\nlr_policy: "fixed"\n'
        "max_iter: 10\nsolver_mode: CPU\nrandom_seed: 1\n"
    )
    rng = np.random.default_rng(0)
    net = caffe.Net(str(small_net["net"]), str(small_net["weights"]), caffe.TEST)
    masks = {name: rng.random(net.params[name][0].data.shape) > 0.5 for name in ("conv2", "ip1")}
    np.savez(d / "masks.npz", **masks)
    result = pytrim("train-masked", "--solver", solver, "--weights", small_net["weights"], "--masks",
                    d / "masks.npz", "--finetune-iters", "15", "--out", d / "masked.caffemodel", "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    after = caffe.Net(str(small_net["net"]), str(d / "masked.caffemodel"), caffe.TEST)
    for name, mask in masks.items():
        weights = after.params[name][0].data
        assert np.all(weights[~mask] == 0)
        assert not np.allclose(weights[mask], net.params[name][0].data[mask])  # the kept ones trained
    assert not np.allclose(after.params["conv1"][0].data, net.params["conv1"][0].data)


def tiny_setup(small_net: dict[str, Path], tmp_path: Path) -> tuple:
    """The small net as a comparison net: its own data as train/val/test, a short solver."""

    solver = tmp_path / "solver.prototxt"
    solver.write_text(
        f'net: "{small_net["net"]}"\ntest_iter: 1\ntest_interval: 1000\nbase_lr: 0.01\n'
        'momentum: 0.9\nlr_policy: "fixed"\ndisplay: 5\nmax_iter: 5\nsnapshot: 0\n'
        'snapshot_prefix: "x"\nsolver_mode: CPU\nrandom_seed: 1\n'
    )
    files = NetFiles("small", small_net["net"], small_net["weights"], solver, solver)
    return {"small": files}, Data(small_net["db"], small_net["db"], small_net["db"])


def test_relief_cuts_a_dead_neuron(caffe, small_net: dict[str, Path], tmp_path: Path) -> None:
    net = caffe.Net(str(small_net["net"]), str(small_net["weights"]), caffe.TEST)
    net.params["ip1"][0].data[4] = 0.0
    net.params["ip1"][1].data[4] = -1.0  # neuron 4 of ip1 always outputs ReLU(-1) = 0
    net.save(str(small_net["weights"]))
    nets, data = tiny_setup(small_net, tmp_path)
    settings = Settings(rounds=2, budget=10, stats_images=20, select_every=5)
    work = prepare(Task("small", "relief", 0.95, 0), nets["small"], data, settings, tmp_path / "cmp")
    out_net, weights, masks, verified = relief_prune(work)
    trimmed = caffe.Net(str(out_net), str(weights), caffe.TEST)
    assert verified and 0 < trimmed.params["ip1"][0].data.shape[0] <= 11  # the dead neuron is gone, verified
    for key, mask in masks.items():
        name, _, index = key.partition("#")
        assert mask.shape == trimmed.params[name][int(index or 0)].data.shape
        assert np.all(trimmed.params[name][int(index or 0)].data[~mask] == 0)


def test_tiny_comparison_writes_the_curves(small_net: dict[str, Path], tmp_path: Path) -> None:
    nets, data = tiny_setup(small_net, tmp_path)
    settings = Settings(unit_points=(0.25, 0.5), magnitude_points=(1.0,), seeds=(0, 1), budget=10, rounds=2,
                        stats_images=20, select_every=5)  # fmt: skip
    tasks = all_tasks(["small"], ["apoz", "taylor", "magnitude"], settings)
    assert len(tasks) == 2 * 2 + 2 * 2 + 1 * 2
    report = run_comparison(nets, data, tasks, settings, tmp_path / "cmp", log=lambda line: None)
    entries = report["entries"]
    keys = {"criterion", "net", "point", "seed", "params", "nonzero", "compression", "top1", "top1_before", "verified"}
    assert len(entries) == len(tasks) and all(keys <= set(e) for e in entries) and report["failed"] == []
    unit = [e for e in entries if e["criterion"] != "magnitude"]
    assert all(e["verified"] is True for e in unit) and all(e["params"] < 5000 for e in unit)
    half = {e["params"] for e in unit if e["point"] == 0.5}
    assert len(half) == 1  # matched: every unit criterion cuts the same widths
    magnitude = [e for e in entries if e["criterion"] == "magnitude"]
    assert all(e["verified"] is None and e["nonzero"] < e["params"] for e in magnitude)
    assert {(r["criterion"], r["point"]) for r in report["summary"]} == {("apoz", 0.25), ("apoz", 0.5),
                                                                          ("taylor", 0.25), ("taylor", 0.5),
                                                                          ("magnitude", 1.0)}  # fmt: skip
    assert all(r["seeds"] == 2 for r in report["summary"])
    assert "validation split" in (tmp_path / "cmp/report.md").read_text()
    assert (tmp_path / "cmp/accuracy_vs_compression.png").stat().st_size > 5000
    written = json.loads((tmp_path / "cmp/report.json").read_text())
    assert written["entries"] == entries and written["machine"]["blas_threads"] == 1
    # A rerun keeps the finished tasks.
    stamp = (tmp_path / "cmp" / tasks[0].folder / "result.json").stat().st_mtime_ns
    again = run_comparison(nets, data, tasks[:1], settings, tmp_path / "cmp", log=lambda line: None)
    assert again["entries"] == entries[:1]
    assert (tmp_path / "cmp" / tasks[0].folder / "result.json").stat().st_mtime_ns == stamp


def test_the_comparison_refuses_an_unverified_cut(small_net: dict[str, Path], tmp_path: Path) -> None:
    nets, data = tiny_setup(small_net, tmp_path)
    impossible = Settings(budget=10, stats_images=20, verify_tol=-1.0, seeds=(0,))  # no difference can pass
    with pytest.raises(StepFailed, match="does not verify"):
        run_comparison(nets, data, [Task("small", "l1", 0.5, 0)], impossible, tmp_path / "cmp", log=lambda line: None)
    assert not (tmp_path / "cmp/small/l1/0.5/seed0/result.json").exists()


def test_the_plot_is_written_while_a_net_has_no_finished_task(tmp_path: Path) -> None:
    """Reports are rewritten as tasks end (in any order on Ray workers): a net without a
    finished task yet gets an empty panel, not an error."""

    row = {"net": "a", "criterion": "apoz", "compression": 2.0, "top1": 0.9, "top1_std": 0.01}
    report = {"baselines": {"a": {"top1": 0.91}, "b": {"top1": 0.9}}, "summary": [row]}
    assert plot(report, tmp_path / "p.png").stat().st_size > 5000
