"""Do two samples choose the same neurons? (the paper's check that APoZ measured on validation
images picks what training images would): statistics on the net's TEST data and on a seeded
random sample of the same size from another LMDB, the mean + k·std rule on each, and the
overlap of the removed neurons per layer."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pytrim.caffeio.lmdb import sample_lmdb
from pytrim.caffeio.proto import with_test_data
from pytrim.stats.collect import collect
from pytrim.surgery.choose import Rule, choose, overlap


def overlap_of(net: Path, weights: Path, other: Path, layers: list[str], images: int | None, k: float,
               seed: int) -> dict[str, Any]:  # fmt: skip
    """Per layer the overlap of the neurons removed on the two samples (pytrim.surgery.choose.overlap)."""
    first = collect(net, weights, layers=layers, images=images, progress=False)
    count = first.layers[layers[0]].images
    with tempfile.TemporaryDirectory() as tmp:
        drawn = sample_lmdb(other, Path(tmp) / "sample_lmdb", count, seed)
        second = collect(with_test_data(net, drawn, Path(tmp) / "other.prototxt"), weights, layers, count, False)
    result = {}
    for name in layers:
        a = choose(name, first.layers[name].apoz, Rule("mean_std", k=k))
        b = choose(name, second.layers[name].apoz, Rule("mean_std", k=k))
        result[name] = overlap(a, b) | {"images": count}
    return result
