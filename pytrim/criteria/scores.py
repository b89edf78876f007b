"""Pruning criteria: statistics and weights in, scores out.

Two kinds:
- per unit (a channel or neuron, cut physically by pytrim.surgery.cut): one registered
  `Criterion` class each, whose `scores` give prunability (higher = removed first), so every
  unit criterion works with pytrim.surgery.choose's rules (mean + k·std, a ratio, a count,
  a width plan). A criterion says which statistics it needs (`needs_taylor`: a backward pass);
- per connection (a weight, masked to zero; the net keeps its shape): a boolean mask of the
  weights to keep, per layer: `magnitude_mask` here, NN Relief in pytrim.criteria.relief.

Unit criteria:
- `apoz` (Hu et al. 2016): Average Percentage of Zeros of the post-ReLU output;
- `mean_activation`: mean post-ReLU output (low = prunable);
- `l1` (Li et al. 2017): L1 norm of each filter / neuron's incoming weights;
- `taylor` (Molchanov et al. 2017): |mean over positions of activation x gradient|, averaged
  over images, l2-normalised per layer;
- `random`: a control, seeded.
For a group of coupled layers the statistics are the group's (pytrim.stats.layer_data) and
L1 is summed over its producers.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from pytrim.core.errors import BadInput
from pytrim.stats.layer_data import LayerData


class Criterion:
    """A unit criterion: `scores(layer, seed)` -> prunability of each output channel."""

    name: ClassVar[str]
    needs_taylor: ClassVar[bool] = False

    def scores(self, layer: LayerData, seed: int = 0) -> np.ndarray:
        raise NotImplementedError


REGISTRY: dict[str, Criterion] = {}


def register(cls: type[Criterion]) -> type[Criterion]:
    REGISTRY[cls.name] = cls()
    return cls


@register
class APoZ(Criterion):
    name = "apoz"

    def scores(self, layer: LayerData, seed: int = 0) -> np.ndarray:
        return layer.zeros / float(layer.images * layer.positions)


@register
class MeanActivation(Criterion):
    name = "mean_activation"

    def scores(self, layer: LayerData, seed: int = 0) -> np.ndarray:
        return -(layer.activation_sum / float(layer.images * layer.positions))


@register
class L1(Criterion):
    name = "l1"

    def scores(self, layer: LayerData, seed: int = 0) -> np.ndarray:
        if layer.l1 is not None:
            return -layer.l1
        return -np.abs(layer.weights.reshape(layer.width, -1)).sum(axis=1)


@register
class Taylor(Criterion):
    name = "taylor"
    needs_taylor = True

    def scores(self, layer: LayerData, seed: int = 0) -> np.ndarray:
        raw = layer.taylor / float(layer.images)
        norm = np.linalg.norm(raw)
        return -(raw / norm if norm > 0 else raw)


@register
class Random(Criterion):
    name = "random"

    def scores(self, layer: LayerData, seed: int = 0) -> np.ndarray:
        return np.random.default_rng(seed).random(layer.width)


UNIT = tuple(REGISTRY)
CONNECTION = ("magnitude", "relief")


def criterion(name: str) -> Criterion:
    """The registered unit criterion `name`, or one error listing them."""
    if name not in REGISTRY:
        raise BadInput(f"unknown unit criterion {name!r} (one of {', '.join(UNIT)})")
    return REGISTRY[name]


def unit_scores(name: str, layer: LayerData, seed: int = 0) -> np.ndarray:
    """Prunability of each output channel/neuron of a layer (higher = removed first)."""
    return criterion(name).scores(layer, seed)


def magnitude_mask(weights: np.ndarray, quality: float, std: float | None = None) -> np.ndarray:
    """Han et al.: keep the weights whose magnitude exceeds quality x the layer's weight std
    (of these weights, or `std`: the iterative method keeps the original layer's)."""
    return np.abs(weights) > quality * (float(weights.std()) if std is None else std)
