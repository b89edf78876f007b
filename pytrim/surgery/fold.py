"""Optional compensation (off by default; the paper has none): fold each removed channel's
mean output into the biases of the layers that read it.

A removed channel c with mean m_c (measured over the TEST images where each consumer reads
it: pytrim.stats.means) contributes, to output o of a consumer, sum over its weights of
W[o, c, ...] * m_c; that sum is added to the consumer's bias (a consumer without one gets a
bias). It is exact for InnerProduct (per input element means) and for unpadded convolution
when the channel is constant, approximate at padded borders. Deconvolution consumers are not
folded (their output positions receive different numbers of taps).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pytrim.graph.model import Graph, Use, elements
from pytrim.graph.queries import positions


def contribution(weights: np.ndarray, use: Use, removed: np.ndarray, mean: np.ndarray) -> np.ndarray | None:
    """What the removed input channels, held at their means, add to each output (None where
    folding does not apply)."""
    if use.type == "Deconvolution" or removed.size == 0:
        return None
    if use.type == "InnerProduct":
        matrix = weights if use.params[0][1] == 1 else weights.T
        inputs = elements(removed, use.layout.spatial)
        return matrix[:, inputs].astype(np.float64) @ mean[inputs]
    out = weights.shape[0]
    if use.groups > 1:
        per_in, per_out = use.layout.width // use.groups, out // use.groups
        total = np.zeros(out)
        for c in removed:
            block, local = divmod(int(c), per_in)
            rows = slice(block * per_out, (block + 1) * per_out)
            total[rows] += weights[rows, local].reshape(per_out, -1).sum(axis=1) * mean[c]
        return total
    return weights[:, removed].reshape(out, removed.size, -1).sum(axis=2).astype(np.float64) @ mean[removed]


def fold_biases(
    graph: Graph,
    kept: dict[int, np.ndarray],
    weights_of: Callable[[str], np.ndarray],
    means: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """layer -> what to add to its bias (over its original outputs)."""
    biases: dict[str, np.ndarray] = {}
    for use in graph.uses:
        keep = positions(graph, use.layout, kept) if use.kind == "consumer" else None
        if keep is None or use.bottom not in means:
            continue
        removed = np.setdiff1d(np.arange(use.layout.width), keep)
        added = contribution(weights_of(use.layer), use, removed, means[use.bottom])
        if added is not None:
            biases[use.layer] = biases.get(use.layer, 0) + added
    return biases
