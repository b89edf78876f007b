"""Each criterion on a hand-made layer gives the hand-computed scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import pytrim

from pytrim.collect import collect_layer_data
from pytrim.compare import NetSpec, Settings, relief, run_net, write
from pytrim.criteria import (
    LayerData,
    expand_mask,
    magnitude_mask,
    relief_importance,
    relief_masks,
    unit_scores,
)

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


def test_relief_importance_by_hand() -> None:
    x = np.array([1.0, 0.5, 2.0, 0.0])  # mean |x_i|
    layer = LayerData(W, B, input_abs_mean=x)
    scores, bias = relief_importance(layer)
    # Neuron 0: |w|*x = 1, 1, 0, 0; bias 0; S = 2.
    np.testing.assert_allclose(scores[0], [0.5, 0.5, 0.0, 0.0])
    # Neuron 1: 0.5, 0.25, 1.0, 0; bias 2; S = 3.75.
    np.testing.assert_allclose(scores[1], np.array([0.5, 0.25, 1.0, 0.0]) / 3.75)
    np.testing.assert_allclose(bias, [0.0, 2 / 3.75, 1 / 5])
    np.testing.assert_allclose(scores.sum(axis=1) + bias, 1.0)


def test_relief_keeps_alpha_of_each_neuron_and_no_more_than_needed() -> None:
    x = np.array([1.0, 0.5, 2.0, 0.0])
    layer = LayerData(W, B, input_abs_mean=x)
    keep = relief_masks(layer, alpha=0.9)
    # Neuron 0 needs both 0.5s; neuron 1: bias 0.533 + 1/3.75 (0.267) = 0.8 < 0.9, + 0.5/3.75 -> 0.933.
    assert keep.tolist() == [[True, True, False, False], [True, False, True, False], [True, False, False, False]]
    scores, bias = relief_importance(layer)
    kept = (scores * keep).sum(axis=1) + bias
    assert np.all(kept >= 0.9 - 1e-12)
    # Dropping the weakest kept connection of any neuron falls below alpha: the set is minimal.
    for j in range(3):
        kept_scores = scores[j][keep[j]]
        if kept_scores.size:
            assert kept[j] - kept_scores.min() < 0.9
    # A neuron whose bias alone reaches alpha keeps no connection.
    assert not relief_masks(LayerData(W, np.array([0.0, 100.0, 0.0]), input_abs_mean=x), 0.9)[1].any()


def test_relief_conv_kernels_and_mask_expansion() -> None:
    kernels = np.zeros((2, 3, 2, 2))
    kernels[0, 0] = 1.0  # ||K||_1 = 4
    kernels[0, 2] = -0.5  # 2
    kernels[1, 1] = 0.25  # 1
    layer = LayerData(kernels, np.zeros(2), input_abs_mean=np.array([1.0, 1.0, 3.0]))
    scores, _ = relief_importance(layer)
    np.testing.assert_allclose(scores[0], [0.4, 0.0, 0.6])  # 4*1 and 2*3 out of 10
    np.testing.assert_allclose(scores[1], [0.0, 1.0, 0.0])
    keep = relief_masks(layer, alpha=0.5)
    assert keep.tolist() == [[False, False, True], [False, True, False]]
    full = expand_mask(keep, kernels.shape)
    assert full.shape == kernels.shape and full[0, 2].all() and not full[0, 0].any()


# --- with Caffe -------------------------------------------------------------------------------


def test_layer_data_matches_brute_force(caffe, small_net: dict[str, Path]) -> None:
    data = collect_layer_data(small_net["net"], small_net["weights"], ["conv2", "ip1"], limit=20, taylor=True)
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
                    d / "masks.npz", "--max-iter", "15", "--out", d / "masked.caffemodel", "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    after = caffe.Net(str(small_net["net"]), str(d / "masked.caffemodel"), caffe.TEST)
    for name, mask in masks.items():
        weights = after.params[name][0].data
        assert np.all(weights[~mask] == 0)
        assert not np.allclose(weights[mask], net.params[name][0].data[mask])  # the kept ones trained
    assert not np.allclose(after.params["conv1"][0].data, net.params["conv1"][0].data)


def test_relief_cuts_a_dead_neuron_and_keeps_alpha(caffe, small_net: dict[str, Path], tmp_path: Path) -> None:
    net = caffe.Net(str(small_net["net"]), str(small_net["weights"]), caffe.TEST)
    net.params["ip1"][0].data[4] = 0.0
    net.params["ip1"][1].data[4] = -1.0  # neuron 4 of ip1 always outputs ReLU(-1) = 0
    dead = tmp_path / "dead.caffemodel"
    net.save(str(dead))
    spec = NetSpec("small", small_net["net"], small_net["deploy"], dead, small_net["net"], small_net["net"])
    settings = Settings(alpha_conv=0.9, alpha_fc=0.95, stats_images=20)
    out_net, out_weights, masks = relief(spec, settings, tmp_path, log=lambda _: None)
    trimmed = caffe.Net(str(out_net), str(out_weights), caffe.TEST)
    assert trimmed.params["ip1"][0].data.shape[0] <= 11  # the dead neuron is gone
    assert trimmed.params["ip1"][0].data.shape[0] > 0
    for name, mask in masks.items():
        assert mask.shape == trimmed.params[name][0].data.shape
        assert np.all(trimmed.params[name][0].data[~mask] == 0)
    # Connections were masked (fc layers keep well under all), and the dead neuron was cut.
    assert masks["ip1"].mean() < 0.9


def test_tiny_comparison_writes_the_report(small_net: dict[str, Path], tmp_path: Path) -> None:
    solver = tmp_path / "solver.prototxt"
    solver.write_text(
        f'net: "{small_net["net"]}"\ntest_iter: 1\ntest_interval: 1000\nbase_lr: 0.01\n'
        'momentum: 0.9\nlr_policy: "fixed"\ndisplay: 5\nmax_iter: 5\nsnapshot: 0\n'
        'snapshot_prefix: "x"\nsolver_mode: CPU\nrandom_seed: 1\n'
    )
    spec = NetSpec("small", small_net["net"], small_net["deploy"], small_net["weights"], solver, solver)
    settings = Settings(ratio=0.25, finetune_iters=5, stats_images=20)
    entries = run_net(spec, ["apoz", "taylor", "magnitude"], settings, tmp_path / "cmp", log=lambda _: None)
    assert [e["criterion"] for e in entries] == ["baseline", "apoz", "taylor", "magnitude"]
    for entry in entries:
        assert {"criterion", "net", "params", "nonzero", "compression", "top1", "flops"} <= set(entry)
    apoz, taylor, magnitude = entries[1:]
    assert apoz["params"] == taylor["params"] < entries[0]["params"]  # matched: same widths
    assert magnitude["params"] == entries[0]["params"] > magnitude["nonzero"]
    write(entries, settings, tmp_path / "cmp")
    assert json.loads((tmp_path / "cmp/report.json").read_text())[1]["criterion"] == "apoz"
    assert (tmp_path / "cmp/accuracy_vs_compression.png").stat().st_size > 5000
