"""Pruning criteria: statistics and weights in, scores out.

Two kinds, one interface (`Criterion.unit_scores` / `Criterion.connection_masks`):
- per unit (a channel or neuron, cut physically by pytrim.cut): the score is prunability,
  higher = removed first, so every unit criterion works with pytrim.choose's rules (the
  paper's mean + k·std, a ratio, a count, a width plan);
- per connection (a weight, masked to zero; the net keeps its shape): a boolean mask of the
  weights to keep, per layer.

Criteria:
- `apoz` (Hu et al. 2016): Average Percentage of Zeros of the post-ReLU output;
- `mean_activation`: mean post-ReLU output (low = prunable);
- `l1` (Li et al. 2017): L1 norm of each filter / neuron's incoming weights;
- `taylor` (Molchanov et al. 2017): |mean over positions of activation x gradient|, averaged
  over images, l2-normalised per layer;
- `random`: a control, seeded;
- `magnitude` (Han et al. 2015, connections): keep |w| > quality x std(w) of the layer;
- `relief` (Dekhovich et al. 2021, connections): see `relief_masks`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pytrim.errors import BadInput

UNIT = ("apoz", "mean_activation", "l1", "taylor", "random")
CONNECTION = ("magnitude", "relief")


@dataclass
class LayerData:
    """What the criteria read for one layer: its weights [out, in, ...] and bias, and
    activation statistics over N images (channel c of the output; input channel i)."""

    weights: np.ndarray
    bias: np.ndarray | None = None
    zeros: np.ndarray | None = None  # per output channel: count of zero post-ReLU outputs
    positions: int = 1  # M: output positions per image and channel
    images: int = 0  # N
    activation_sum: np.ndarray | None = None  # per output channel: sum of post-ReLU outputs
    taylor: np.ndarray | None = None  # per output channel: sum over images of |mean_m(a*g)|
    input_abs_mean: np.ndarray | None = None  # per input channel i: mean over samples/positions of |x_i|
    l1: np.ndarray | None = None  # per output channel: filter L1 norm summed over its group's producers

    @property
    def width(self) -> int:
        return int(self.zeros.size) if self.zeros is not None else int(self.weights.shape[0])


def unit_scores(criterion: str, layer: LayerData, seed: int = 0) -> np.ndarray:
    """Prunability of each output channel/neuron of a layer (higher = removed first). For a
    group of coupled layers the statistics are the group's (pytrim.collect.group_sums) and
    L1 is summed over its producers."""
    out = layer.width
    if criterion == "apoz":
        return layer.zeros / float(layer.images * layer.positions)
    if criterion == "mean_activation":
        return -(layer.activation_sum / float(layer.images * layer.positions))
    if criterion == "l1":
        return -(layer.l1 if layer.l1 is not None else np.abs(layer.weights.reshape(out, -1)).sum(axis=1))
    if criterion == "taylor":
        raw = layer.taylor / float(layer.images)
        norm = np.linalg.norm(raw)
        return -(raw / norm if norm > 0 else raw)
    if criterion == "random":
        return np.random.default_rng(seed).random(out)
    raise BadInput(f"unknown unit criterion {criterion!r} (one of {', '.join(UNIT)})")


def magnitude_mask(weights: np.ndarray, quality: float) -> np.ndarray:
    """Han et al.: keep the weights whose magnitude exceeds quality x the layer's weight std."""
    return np.abs(weights) > quality * float(weights.std())


def relief_importance(layer: LayerData) -> tuple[np.ndarray, np.ndarray]:
    """NN Relief importance of every connection and of each bias, normalised per neuron.

    Fully connected: s_ij = mean_n |w_ji · x_ni| = |w_ji| · mean_n |x_ni| (the weight is the
    same for every sample), bias share |b_j|; both divided by S_j = Σ_i s_ij + |b_j|.
    Convolution, per kernel: s_ij = ||K_ji||_1 · mean |x_i|, the mean of |x_i| over samples
    and positions. Like the authors' code, |x| is averaged over samples before it meets the
    kernel; averaging it over positions too reduces "|K| convolved with mean |x|" to this
    product, exact when mean |x_i| is the same at every position and a close, cheap
    approximation otherwise. Returns (connection scores [out, in], bias scores [out]).
    """
    out = layer.weights.shape[0]
    kernel = np.abs(layer.weights.reshape(out, layer.weights.shape[1], -1)).sum(axis=2)
    scores = kernel * layer.input_abs_mean[None, :]
    bias = np.abs(layer.bias) if layer.bias is not None else np.zeros(out)
    total = scores.sum(axis=1) + bias
    safe = np.where(total > 0, total, 1.0)
    return scores / safe[:, None], bias / safe


def relief_masks(layer: LayerData, alpha: float) -> np.ndarray:
    """Per neuron, the smallest set of incoming connections whose importance, with the bias
    share, reaches `alpha`: a mask [out, in] of (neuron, input channel) pairs to keep. A
    neuron whose bias alone reaches alpha keeps no connection (it is then constant)."""
    scores, bias = relief_importance(layer)
    keep = np.zeros_like(scores, dtype=bool)
    for j in range(scores.shape[0]):
        need = alpha - bias[j]
        if need <= 0:
            continue
        order = np.argsort(-scores[j], kind="stable")
        cumulative = np.cumsum(scores[j][order])
        count = int(np.searchsorted(cumulative, need - 1e-12) + 1)
        keep[j, order[: min(count, order.size)]] = True
    return keep


def expand_mask(mask: np.ndarray, weights_shape: tuple[int, ...]) -> np.ndarray:
    """A (neuron, input channel) mask broadcast to the full weight shape (conv kernels)."""
    return np.broadcast_to(mask.reshape(mask.shape + (1,) * (len(weights_shape) - 2)), weights_shape).copy()
