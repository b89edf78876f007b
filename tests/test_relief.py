"""NN Relief as its authors run it: the per-neuron rule on hand-made layers, the convolution
score against a brute-force correlation, and two rounds on a tiny net."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import net_text, small_body, toy_db, write_net

from pytrim.criteria.relief import LayerInput, conv_importance, fc_importance, keep_rule, layer_masks, window_sums
from pytrim.experiments.relief import ReliefNet, ReliefSettings, run_relief


def test_keep_rule_is_the_authors() -> None:
    # The element that crosses alpha is kept; ties at the threshold and the smallest go.
    assert keep_rule(np.array([5.0, 3, 1, 1]), 0.9).tolist() == [True, True, False, False]
    assert keep_rule(np.array([5.0, 3, 1.5, 0.5]), 0.99).tolist() == [True, True, True, False]
    assert keep_rule(np.array([5.0, 3, 1.5, 0.5]), 1.0).tolist() == [True, True, True, False]
    assert keep_rule(np.array([1.0, 6, 3]), 0.6).tolist() == [False, True, False]  # 6 >= 0.6 * 10
    assert not keep_rule(np.array([2.0, 2, 2]), 0.5).any()  # all equal: nothing is kept


def test_fc_masks_rank_the_bias_among_the_connections() -> None:
    weights = np.array([[1.0, -2.0, 0.0, 4.0], [0.5, 0.5, 0.5, 0.5]])
    bias = np.array([3.0, -0.1])
    x = np.array([1.0, 1.0, 1.0, 0.5])  # mean |x| per input
    importance = fc_importance(weights, bias, x)
    np.testing.assert_allclose(importance, [[1, 2, 0, 2, 3], [0.5, 0.5, 0.5, 0.25, 0.1]])
    keep, bias_keep = layer_masks(importance, 0.7, np.array([False, False]), weights.shape)
    # Neuron 0, sorted 3 (bias), 2, 2, 1, 0 of 8: 3 + 2 = 5 < 5.6, + 2 = 7 crosses -> keep > the next (1).
    assert keep[0].tolist() == [False, True, False, True] and bias_keep[0]
    # Neuron 1: 0.5, 0.5, 0.5, 0.25, 0.1 of 1.85: 1.0 < 1.295, 1.5 crosses -> keep > 0.25; the bias goes.
    assert keep[1].tolist() == [True, True, True, False] and not bias_keep[1]
    dead, dead_bias = layer_masks(importance, 0.7, np.array([True, False]), weights.shape)
    assert not dead[0].any() and not dead_bias[0] and dead[1].tolist() == keep[1].tolist()


def brute_force(mean_abs: np.ndarray, kernels: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Per (o, c): the correlation of the padded map with |K_oc|, summed over output positions."""
    padded = np.pad(mean_abs, ((0, 0), (pad, pad), (pad, pad)))
    k = kernels.shape[2]
    out = (padded.shape[1] - k) // stride + 1
    scores = np.zeros(kernels.shape[:2])
    for o in range(kernels.shape[0]):
        for c in range(kernels.shape[1]):
            for y in range(out):
                for x in range(out):
                    window = padded[c, y * stride : y * stride + k, x * stride : x * stride + k]
                    scores[o, c] += (window * np.abs(kernels[o, c])).sum()
    return scores


def test_conv_score_is_the_correlation_summed_over_positions() -> None:
    rng = np.random.default_rng(0)
    mean_abs, kernels, bias = rng.random((3, 7, 7)), rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)
    for stride, pad in ((1, 0), (2, 1)):
        out = (7 + 2 * pad - 3) // stride + 1
        sums = window_sums(mean_abs, (3, 3), (stride, stride), (pad, pad), (out, out))
        importance = conv_importance(kernels, bias, sums, out * out)
        np.testing.assert_allclose(importance[:, :3], brute_force(mean_abs, kernels, stride, pad), rtol=1e-10)
        np.testing.assert_allclose(importance[:, 3], np.abs(bias) * out * out)
    keep, _ = layer_masks(importance, 0.5, np.zeros(4, bool), kernels.shape)
    assert keep.shape == kernels.shape and (keep == keep[:, :, :1, :1]).all()  # whole kernels


def test_two_rounds_on_a_tiny_net(caffe, tmp_path: Path) -> None:
    dbs = {split: toy_db(tmp_path / split, n, seed=i) for i, (split, n) in enumerate((("train", 80), ("val", 20),
                                                                                       ("test", 20)))}  # fmt: skip
    net = write_net(tmp_path / "tv.prototxt", net_text(small_body, [10, 1, 28, 28], (dbs["train"], dbs["test"], 10)))
    caffe.set_random_seed(3)
    caffe.Net(str(net), caffe.TRAIN).save(str(tmp_path / "init.caffemodel"))
    weights = tmp_path / "init.caffemodel"
    spec = ReliefNet("tiny", net, weights, weights, dbs["train"], dbs["val"], dbs["test"])
    settings = ReliefSettings(alpha_conv=0.8, alpha_fc=0.8, rounds=2, sample=30, retrain_iters=20, select_every=10)
    report = run_relief(spec, settings, tmp_path / "run", log=lambda _: None)
    first, second = report["rounds"]
    assert report["baseline"]["params"] > first["nonzero"] > second["nonzero"]  # the masks shrink
    assert second["compression"] == report["baseline"]["params"] / second["nonzero"]
    with np.load(tmp_path / "run/round-02/masks.npz") as stored:
        masks = {k: stored[k] for k in stored.files}
    retrained = caffe.Net(str(net), str(tmp_path / "run/round-02/retrained.caffemodel"), caffe.TEST)
    for key, mask in masks.items():
        name, _, index = key.partition("#")
        assert np.all(retrained.params[name][int(index or 0)].data[~mask] == 0)  # held at zero
    # Orphans: an ip1 neuron that ip2 no longer reads has lost its weights and its bias.
    unread = ~masks["ip2"].any(axis=0)
    assert not masks["ip1"][unread].any() and not masks["ip1#1"][unread].any()
    assert json.loads((tmp_path / "run/report.json").read_text())["rounds"][1]["round"] == 2
    # A second run with the same settings keeps the finished rounds.
    stamp = (tmp_path / "run/round-01/retrained.caffemodel").stat().st_mtime_ns
    run_relief(spec, settings, tmp_path / "run", log=lambda _: None)
    assert (tmp_path / "run/round-01/retrained.caffemodel").stat().st_mtime_ns == stamp


def test_dead_neurons_lose_everything() -> None:
    """The dead test reads the blob the neuron's consumers read (after its ReLU)."""
    dead = LayerInput(np.ones(4), np.array([False, True, False, False]))
    weights = np.arange(16.0).reshape(4, 4) + 1
    keep, bias = layer_masks(fc_importance(weights, np.ones(4), dead.mean_abs), 0.9, dead.dead, (4, 4))
    assert not keep[1].any() and not bias[1] and keep[0].any()
