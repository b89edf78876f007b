"""Benchmarks that print numbers: the cost of APoZ counting over a bare forward pass.

Timings on a shared machine drift; interleaving the two kinds (bare, collecting, bare,
collecting, ...) exposes both to the same drift, and the median of the per-pair ratios is
robust to the odd slow pair. The spread (the interquartile range of the pair ratios) is
reported beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.netcheck import load_net
from pytrim.feeds.source import batches, data_source
from pytrim.graph.build import net_graph
from pytrim.graph.queries import groups_of
from pytrim.stats.collect import ZeroCounter, measure_plan


def interleaved(first: Callable[[], float], second: Callable[[], float], repeats: int) -> dict[str, Any]:
    """Time `first` and `second` alternately; the median ratio second/first and its spread."""
    pairs = [(first(), second()) for _ in range(repeats)]
    ratios = np.array([b / a for a, b in pairs])
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    return {
        "ratio": float(median),
        "spread": float(q3 - q1),
        "ratio_q1": float(q1),
        "ratio_q3": float(q3),
        "first_seconds": float(np.median([a for a, _ in pairs])),
        "second_seconds": float(np.median([b for _, b in pairs])),
        "repeats": repeats,
    }


def apoz_overhead(net_path: Path, weights: Path, images: int, repeats: int) -> dict[str, Any]:
    """Forward passes alone vs forward passes with the zero counting of `collect`, on the same
    Net and the same `images` TEST images, interleaved `repeats` times after a warm-up."""
    net_param, graph = net_graph(net_path)
    data = data_source(net_param, images)
    targets = groups_of(graph)
    blobs = list(dict.fromkeys(p.blob for points in measure_plan(graph, targets, {}).values() for p in points))
    net = load_net(net_path, weights)
    for _ in batches(net, data, progress=False):  # warm up: prefetch, page cache, allocations
        pass

    def bare() -> float:
        start = time.perf_counter()
        for _ in batches(net, data, progress=False):
            pass
        return time.perf_counter() - start

    def collecting() -> float:
        counter = ZeroCounter(net, blobs)
        start = time.perf_counter()
        for take in batches(net, data, progress=False):
            counter.update(take)
        return time.perf_counter() - start

    result = interleaved(bare, collecting, repeats)
    result.update(forward_seconds=result.pop("first_seconds"), collect_seconds=result.pop("second_seconds"))
    return result | {"images": data.total, "layers": list(targets), "net": str(net_path)}
