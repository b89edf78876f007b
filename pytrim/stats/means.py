"""Mean outputs of the channels a cut removes, where their consumers read them: what
`cut --fold-mean` (pytrim.surgery.fold) adds to the consumers' biases."""

from __future__ import annotations

from typing import Any

import numpy as np

from pytrim.graph.model import Graph, Group
from pytrim.scale.shards import OrderedSum


def mean_blobs(graph: Graph, groups: list[Group]) -> dict[str, str]:
    """blob -> "channel" (a convolution reads it: a mean per channel) or "element" (an
    InnerProduct reads it: a mean per input element), for every consumer of `groups`."""
    ids = {group.id for group in groups}
    found = {}
    for use in graph.uses:
        if use.kind == "consumer" and any(graph.root(s.group) in ids for s in use.layout.segments):
            found[use.bottom] = "element" if use.type == "InnerProduct" else "channel"
    return found


class MeanSums:
    """Sums, over images, of the blobs consumers read (per channel or per element), kept as
    per-batch terms (pytrim.scale.shards.OrderedSum: shards merge into exactly the same sums)."""

    def __init__(self, net: Any, blobs: dict[str, str], first_batch: int = 0) -> None:
        self.net, self.blobs = net, blobs
        self.sums = {blob: OrderedSum(first_batch) for blob in blobs}
        self.images = 0

    def update(self, take: int) -> None:
        for blob, kind in self.blobs.items():
            data = self.net.blobs[blob].data[:take].reshape(take, self.net.blobs[blob].data.shape[1], -1)
            per = data.mean(axis=2) if kind == "channel" else data.reshape(take, -1)
            self.sums[blob].add(per.sum(axis=0, dtype=np.float64))
        self.images += take

    def means(self) -> dict[str, np.ndarray]:
        return {blob: np.asarray(total.total()) / self.images for blob, total in self.sums.items()}
