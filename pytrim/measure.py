"""Size and speed of a net: parameters, FLOPs per image, forward time per image."""

from __future__ import annotations

import time
from pathlib import Path
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


def measure_model(net_path: Path, weights: Path, limit: int | None = None) -> dict[str, Any]:
    """Accuracy, parameters, FLOPs, file size and forward time of one model."""
    from pytrim.caffemodel import Caffemodel
    from pytrim.evaluate import evaluate
    from pytrim.netcheck import load_net
    from pytrim.protoutil import read_net

    accuracy = evaluate(net_path, weights, limit=limit, progress=False)
    net = load_net(net_path, weights)
    with Caffemodel(weights) as model:
        params = model.params()
    return {
        "net": str(net_path),
        "weights": str(weights),
        **accuracy.to_json(),
        "params": params,
        "flops": flops(net, read_net(net_path)),
        "file_mb": weights.stat().st_size / 2**20,
        "ms_per_image": 1000 * forward_seconds_per_image(net),
    }
