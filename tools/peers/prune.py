"""One Torch-Pruning step to a MACs target, with its own importances.

Torch-Pruning's MetaPruner removes the same fraction of every channel group its dependency
graph finds (its default, local pruning), ranked inside each group by the importance; the
classifier (the layers pytrim never trims) is ignored. A step prunes a fresh copy of the
model for a candidate fraction and counts its MACs as pytrim does; the fraction is bisected
until the smallest one whose MACs reach the target (at or below it) is found, and that copy
is the step's result. GroupTaylorImportance reads gradients of the loss, computed once on
the step's images before the search and handed to every candidate copy.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch_pruning as tp
from finetune import inputs
from torch import nn
from twin import macs

IMPORTANCES: dict[str, Callable[[], Any]] = {
    "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "taylor": lambda: tp.importance.GroupTaylorImportance(),
    "bn_scale": lambda: tp.importance.BNScaleImportance(),
    "random": lambda: tp.importance.RandomImportance(),
}
SEARCH_STEPS = 12
MAX_FRACTION = 0.95


def gradients(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch: int) -> dict[str, torch.Tensor]:
    """Gradients of the summed batch-mean loss over `images` (eval-mode BatchNorm), by name."""
    model.eval()
    model.zero_grad()
    for i in range(0, len(labels), batch):
        out = model(inputs(images[i : i + batch], model.spec))
        nn.functional.cross_entropy(out, torch.from_numpy(labels[i : i + batch])).backward()
    found = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return found


def candidate(model: nn.Module, importance: str, fraction: float, grads: dict[str, torch.Tensor] | None,
              seed: int) -> nn.Module:  # fmt: skip
    """A copy of `model` with `fraction` of every channel group removed."""
    pruned = copy.deepcopy(model)
    if grads is not None:
        for name, p in pruned.named_parameters():
            p.grad = grads[name].clone() if name in grads else None
    torch.manual_seed(seed)  # RandomImportance draws the same ranking for every candidate
    shape = model.spec["input"]["shape"]
    pruner = tp.pruner.MetaPruner(pruned, torch.zeros(1, *shape), IMPORTANCES[importance](),
                                  pruning_ratio=fraction, ignored_layers=pruned.classifier())  # fmt: skip
    pruner.step()
    pruned.zero_grad(set_to_none=True)
    return pruned


def prune_to(model: nn.Module, importance: str, target: float, grads: dict[str, torch.Tensor] | None,
             seed: int) -> tuple[nn.Module, float]:  # fmt: skip
    """The pruned copy with the smallest fraction whose MACs are at most `target`, and that
    fraction; an error when even the largest fraction does not reach it (an importance that
    scores no group of this net: BatchNorm scale on a net without BatchNorm)."""
    shape = model.spec["input"]["shape"]
    if macs(model, shape) <= target:
        return copy.deepcopy(model), 0.0
    low, high = 0.0, MAX_FRACTION
    best = candidate(model, importance, high, grads, seed)
    if macs(best, shape) > target:
        reached = macs(best, shape)
        raise ValueError(f"{importance} prunes {model.spec['name']} to {reached} MACs at most, not {target:.0f}")
    for _ in range(SEARCH_STEPS):
        middle = (low + high) / 2
        trial = candidate(model, importance, middle, grads, seed)
        if macs(trial, shape) <= target:
            high, best = middle, trial
        else:
            low = middle
    return best, high


def widths(model: nn.Module) -> dict[str, int]:
    """Output channels of every convolution and Linear, by module name."""
    found = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            found[name.removeprefix("layers.")] = m.out_channels
        elif isinstance(m, nn.Linear):
            found[name.removeprefix("layers.").removesuffix(".linear")] = m.out_features
    return found
