"""Fine-tuning and evaluation of a twin as Caffe's solver and Data layer do them.

Caffe's SGD (sgd_solver.cpp), per learnable blob, at iteration t (from 0): the gradient of the
batch-mean softmax loss, plus weight_decay * decay_mult * w (L2); then v = momentum * v +
rate(t) * lr_mult * g and w = w - v. The learning rate enters *before* the momentum, so with a
changing rate this is not torch.optim.SGD (which keeps v = momentum * v + g and scales by the
current rate afterwards): `CaffeSGD` is that rule. rate(t) is Caffe's policy formula
(SGDSolver::GetLearningRate) for fixed, step, exp, inv, multistep, poly and sigmoid.

Caffe's Data layer reads its LMDB in order from the first record and wraps around at the
end; `stream` gives the same batches. Seed 0 reads the records in the LMDB's order (the very
images pytrim's retraining sees); any other seed reads a seeded permutation of them, as Caffe
would read a shuffled copy of the database.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn


def rate(budget: dict[str, Any], t: int) -> float:
    """Caffe's learning rate at iteration t."""
    base, policy, gamma, power = budget["base_lr"], budget["lr_policy"], budget["gamma"], budget["power"]
    if policy == "fixed":
        return base
    if policy == "step":
        return base * gamma ** (t // budget["stepsize"])
    if policy == "exp":
        return base * gamma**t
    if policy == "inv":
        return base * (1 + gamma * t) ** (-power)
    if policy == "multistep":
        return base * gamma ** sum(1 for value in budget["stepvalue"] if t >= value)
    if policy == "poly":
        return base * (1 - t / budget["max_iter"]) ** power
    if policy == "sigmoid":
        return base / (1 + math.exp(-gamma * (t - budget["stepsize"])))
    raise ValueError(f"unknown lr_policy {policy!r}")


class CaffeSGD:
    """Caffe's SGD update over parameters with their (lr_mult, decay_mult)."""

    def __init__(self, params: list[tuple[nn.Parameter, float, float]], momentum: float, weight_decay: float) -> None:
        self.params, self.momentum, self.decay = params, momentum, weight_decay
        self.history = [torch.zeros_like(p) for p, _, _ in params]

    @torch.no_grad()
    def step(self, lr: float) -> None:
        for (p, lr_mult, decay_mult), v in zip(self.params, self.history, strict=True):
            if p.grad is None:
                continue
            g = p.grad + (self.decay * decay_mult) * p if self.decay * decay_mult else p.grad
            v.mul_(self.momentum).add_(g, alpha=lr * lr_mult)
            p.sub_(v)

    def zero_grad(self) -> None:
        for p, _, _ in self.params:
            p.grad = None


def stream(images: np.ndarray, labels: np.ndarray, batch: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Batches as Caffe's Data layer reads them (in order, wrapping around); seed != 0 reads
    a seeded permutation of the records."""
    order = np.arange(len(labels)) if seed == 0 else np.random.default_rng(seed).permutation(len(labels))
    position = 0
    while True:
        chosen = order[(position + np.arange(batch)) % len(order)]
        position = (position + batch) % len(order)
        yield images[chosen], labels[chosen]


def inputs(images: np.ndarray, spec: dict[str, Any]) -> torch.Tensor:
    """uint8 images as the net's input: Caffe's transform (minus mean values, times scale)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float()
    mean = spec["input"]["mean"]
    if mean:
        x = x - torch.tensor(mean * (x.shape[1] // len(mean)), dtype=torch.float32).view(1, -1, 1, 1)
    return x * spec["input"]["scale"]


def finetune(model: nn.Module, mults: dict[int, tuple[float, float]], data: Any, budget: dict[str, Any]) -> float:
    """`budget["iterations"]` iterations of Caffe's SGD on `data` (a stream); the last loss."""
    params = [(p, *mults.get(id(p), (1.0, 1.0))) for p in model.parameters() if p.requires_grad]
    solver = CaffeSGD(params, budget["momentum"], budget["weight_decay"])
    model.train()
    loss = torch.tensor(math.nan)
    for t in range(budget["iterations"]):
        images, labels = next(data)
        solver.zero_grad()
        loss = nn.functional.cross_entropy(model(inputs(images, model.spec)), torch.from_numpy(labels))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss.item()} at iteration {t}")
        loss.backward()
        solver.step(rate(budget, t))
    model.eval()
    return float(loss.item())


@torch.no_grad()
def scores(model: nn.Module, images: np.ndarray, batch: int = 100) -> np.ndarray:
    """Class scores of every image (eval mode)."""
    model.eval()
    return torch.cat([model(inputs(images[i : i + batch], model.spec)) for i in range(0, len(images), batch)]).numpy()


def correct(model: nn.Module, split: dict[str, np.ndarray]) -> np.ndarray:
    """Per image: 1.0 where the top class is the label."""
    return (scores(model, split["images"]).argmax(1) == split["labels"]).astype(np.float64)
