"""The TEST data a net is measured on, and the one batch loop over it.

Caffe's Data layer wraps around at the end of its database, so a plain `caffe test` with
`test_iter * batch` larger than the data counts some images twice. `batches` runs whole
`forward()` passes (a partial pass can skip an in-place ReLU) and says how many images of
each batch are new, so that collection, evaluation and the benchmarks count every image
exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytrim.datasets import lmdb_entries
from pytrim.errors import BadInput
from pytrim.protoutil import layers_in_phase


@dataclass
class DataSource:
    """The TEST-phase Data layer of a net: its blobs, source, batch and the images to use."""

    layer: str
    data_blob: str
    label_blob: str | None
    source: Path
    batch: int
    total: int

    def feed(self, net: Any, index: int) -> None:
        """Put batch `index` into the net's input blobs (a Data layer reads its own)."""


def data_source(net_param: Any, limit: int | None = None) -> DataSource:
    """The net's TEST Data layer and how many of its images to use (all, or the first `limit`)."""
    if limit is not None and limit < 1:
        raise BadInput(f"--limit must be at least 1, not {limit}")
    for layer in layers_in_phase(net_param, "TEST"):
        if layer.type != "Data":
            continue
        source = Path(layer.data_param.source)
        total = lmdb_entries(source)
        if total == 0:
            raise BadInput(f"the data source {source} of layer {layer.name!r} is empty")
        label = layer.top[1] if len(layer.top) > 1 else None
        batch = int(layer.data_param.batch_size)
        return DataSource(layer.name, layer.top[0], label, source, batch, min(total, limit or total))
    raise BadInput("the net has no TEST-phase Data layer to read images from")


def batches(net: Any, data: DataSource, desc: str = "images", progress: bool = True) -> Iterator[int]:
    """Run one whole forward pass per batch; yield the number of new images in it."""
    from tqdm import tqdm

    seen = 0
    with tqdm(total=data.total, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for index in range(math.ceil(data.total / data.batch)):
            data.feed(net, index)
            net.forward()
            take = min(data.batch, data.total - seen)
            yield take
            seen += take
            bar.update(take)
