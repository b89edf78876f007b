"""Benchmark: what collecting statistics costs over a bare forward pass (runs/bench/apoz_overhead.json).

The whole `collect` path (the channel graph and measuring-net copy, building the net and
checking its weights, zero counting, the means folding needs, the statistics file written)
against a bare Caffe forward pass over the same images (the net built, its weights loaded,
every batch forwarded), on LeNet and on full-size model-zoo nets with random weights and
generated images (pytrim.experiments.synthetic). Both run in this process after a warm-up
(the net probe cached, the page cache filled). Timings on a shared machine drift;
interleaving the two kinds (bare, collect, bare, collect, ...) exposes both to the same
drift, and the median of the per-pair ratios is robust to the odd slow pair. The spread (the
interquartile range of the pair ratios) is reported beside it, and the ratio of the fastest
timing of each kind (other work on the machine only ever adds time).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.env import blas_config, load_caffe
from pytrim.caffeio.proto import read_net
from pytrim.caffeio.zoo import write
from pytrim.core.runner import run_child
from pytrim.experiments.synthetic import Options, generate
from pytrim.feeds.source import batches, data_source
from pytrim.stats.collect import collect
from pytrim.stats.statsfile import save_stats


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
        "ratio_of_fastest": min(b for _, b in pairs) / min(a for a, _ in pairs),  # a busy machine only adds time
        "first_seconds": float(np.median([a for a, _ in pairs])),
        "second_seconds": float(np.median([b for _, b in pairs])),
        "repeats": repeats,
        "pairs": [[a, b] for a, b in pairs],  # seconds (forward, collect), in the order timed
    }


def apoz_overhead(net_path: Path, weights: Path, images: int, repeats: int, keep_means: bool = False) -> dict:
    """The bare forward passes vs the whole collect path (written to a statistics file), on
    the same `images` TEST images, interleaved `repeats` times after a warm-up of each."""
    caffe = load_caffe()
    data = data_source(read_net(net_path), images)

    def bare() -> float:
        start = time.perf_counter()
        net = caffe.Net(str(net_path), caffe.TEST)
        net.copy_from(str(weights))
        for _ in batches(net, data, progress=False):
            pass
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory(prefix="pytrim-bench-") as tmp:

        def whole() -> float:
            start = time.perf_counter()
            stats = collect(net_path, weights, images=images, progress=False, means=keep_means)
            save_stats(stats, Path(tmp) / "stats.h5")
            return time.perf_counter() - start

        bare(), whole()  # warm-up: the probe cached, the data in the page cache
        result = interleaved(bare, whole, repeats)
    result.update(forward_seconds=result.pop("first_seconds"), collect_seconds=result.pop("second_seconds"))
    return result | {"images": data.total, "net": str(net_path), **blas_config()}


def zoo_case(name: str, folder: Path, images: int, batch: int) -> tuple[Path, Path]:
    """A full-size model-zoo net with random weights reading `images` generated images."""
    (deploy,) = write(name, folder / "prototxt", ["deploy"])
    tv, _ = generate(deploy, folder, Options(images=images, batch=batch))
    weights = folder / "random.caffemodel"
    code = f"from pytrim.experiments.synthetic import make_weights; make_weights({str(tv)!r}, {str(weights)!r})"
    run_child([sys.executable, "-c", code], folder / "weights.log", "random weights")
    return tv, weights
