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
- `relief` (Dekhovich et al. 2021, connections): pytrim.relief, the authors' rule.
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


def magnitude_mask(weights: np.ndarray, quality: float, std: float | None = None) -> np.ndarray:
    """Han et al.: keep the weights whose magnitude exceeds quality x the layer's weight std
    (of these weights, or `std`: the iterative method keeps the original layer's)."""
    return np.abs(weights) > quality * (float(weights.std()) if std is None else std)
