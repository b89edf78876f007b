"""Size and speed of a net: parameters, FLOPs per image, forward time per image."""

from __future__ import annotations

import time
from typing import Any

import numpy as np


def flops(net: Any, net_param: Any) -> int:
    """Multiply-add FLOPs (2 per multiply-accumulate) of Convolution/InnerProduct layers for
    one image, from a pycaffe Net's weight and output shapes."""
    total = 0
    tops = {layer.name: layer.top[0] for layer in net_param.layer if layer.type in ("Convolution", "InnerProduct")}
    for name, top in tops.items():
        if name not in net.params:
            continue
        weights = net.params[name][0].data
        out = net.blobs[top].data
        positions = int(np.prod(out.shape[2:])) if out.ndim > 2 else 1
        total += 2 * int(weights.size) * positions
    return total


def forward_seconds_per_image(net: Any, batches: int = 3) -> float:
    """Best time of one forward pass, divided by the batch size (after one warm-up pass)."""
    batch = next(iter(net.blobs.values())).data.shape[0]
    net.forward()
    best = float("inf")
    for _ in range(batches):
        start = time.perf_counter()
        net.forward()
        best = min(best, time.perf_counter() - start)
    return best / batch
