"""Each criterion on a hand-made layer gives the hand-computed scores."""

from __future__ import annotations

import numpy as np
import pytest

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
