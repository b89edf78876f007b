"""What the pruning criteria read (`LayerData`), measured in one pass over the TEST data:
the zero counts of collect, per-channel activation sums, activation x gradient (a backward
pass per batch, for Taylor), the mean |input| of each layer, and the filters' L1 norms. Float
sums are per-batch terms (pytrim.scale.shards.OrderedSum): shards merge exactly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.netcheck import load_net
from pytrim.caffeio.proto import layers_in_phase
from pytrim.feeds.source import DataSource, Feed, batches, data_source
from pytrim.graph.build import net_graph
from pytrim.graph.model import Graph, Group
from pytrim.graph.queries import groups_having
from pytrim.scale.cluster import run_shards, wanted
from pytrim.scale.shards import OrderedSum, merge, shard_jobs
from pytrim.stats.collect import Point, ZeroCounter, measure_plan


@dataclass
class LayerData:
    """What the criteria read for one layer: its weights [out, in, ...] and bias, and
    activation statistics over N images (channel c of the output; input channel i)."""

    weights: np.ndarray
    bias: np.ndarray | None = None
    zeros: np.ndarray | None = None  # per output channel: count of zero post-ReLU outputs
    positions: int = 1  # M: output positions per image and channel
    images: int = 0  # N
    activation_sum: np.ndarray | None = None  # per output channel: sum of post-ReLU outputs
    taylor: np.ndarray | None = None  # per output channel: sum over images of |mean_m(a*g)|
    input_abs_mean: np.ndarray | None = None  # per input channel i: mean over samples/positions of |x_i|
    l1: np.ndarray | None = None  # per output channel: filter L1 norm summed over its group's producers

    @property
    def width(self) -> int:
        return int(self.zeros.size) if self.zeros is not None else int(self.weights.shape[0])


class ExtraSums:
    """What the other criteria read, summed over images in the same pass as the zero counts:
    per channel of each measured blob the post-ReLU sum and the per-image |mean over
    positions of activation x gradient| (for an in-place ReLU the blob's diff is the gradient
    before the ReLU, whose product with the post-ReLU activation is the same); per input of
    each named layer (channel of a convolution, flattened input of an InnerProduct) the sum
    of mean |x|. Sums are per-batch float64 terms (OrderedSum: shards merge exactly)."""

    def __init__(self, net: Any, blobs: list[str], bottoms: dict[str, tuple[str, bool]], taylor: bool,
                 first_batch: int = 0) -> None:  # fmt: skip
        self.net, self.blobs, self.bottoms, self.taylor = net, blobs, bottoms, taylor
        self.sums = {blob: OrderedSum(first_batch) for blob in blobs}
        self.products = {blob: OrderedSum(first_batch) for blob in blobs}
        self.inputs = {layer: OrderedSum(first_batch) for layer in bottoms}

    def update(self, take: int) -> None:
        for blob in self.blobs:
            data = self.net.blobs[blob].data[:take].reshape(take, self.net.blobs[blob].data.shape[1], -1)
            self.sums[blob].add(np.maximum(data, 0).sum(axis=(0, 2), dtype=np.float64))
            if self.taylor:
                grad = self.net.blobs[blob].diff[:take].reshape(data.shape)
                self.products[blob].add(np.abs((data * grad).mean(axis=2)).sum(axis=0, dtype=np.float64))
        for layer, (bottom, conv) in self.bottoms.items():
            x = np.abs(self.net.blobs[bottom].data[:take])
            per_input = x.reshape(take, x.shape[1], -1).mean(axis=2) if conv else x.reshape(take, -1)
            self.inputs[layer].add(per_input.sum(axis=0, dtype=np.float64))


def criteria_pass(net: Any, data: DataSource, options: dict[str, Any]) -> dict[str, Any]:
    """Zero counts and ExtraSums over `data` (with a backward pass per batch for Taylor)."""
    taylor = options["taylor"]
    counter = ZeroCounter(net, options["blobs"])
    extra = ExtraSums(net, options["blobs"], options["bottoms"], taylor, data.first_batch)
    for take in batches(net, data, "statistics", progress=False):
        if taylor:
            net.backward()
        counter.update(take)
        extra.update(take)
    sums = {"sums": extra.sums, "products": extra.products, "inputs": extra.inputs}
    return {"zeros": counter.zeros, "positions": counter.positions, "images": counter.images, **sums}


def group_sums(points: list[Point], counts: dict[str, Any], width: int) -> dict[str, np.ndarray]:
    """A group's zero counts, activation sums and Taylor sums per image and position (mean over
    the points that carry each channel), as one point with M = 1 would have them."""
    out = {key: np.zeros(width) for key in ("zeros", "sums", "taylor")}
    count = np.zeros(width)
    for p in points:
        part = slice(p.start, p.start + p.length)
        here = slice(p.offset, p.offset + p.length)
        m = counts["positions"][p.blob]
        out["zeros"][part] += counts["zeros"][p.blob][here] / m
        out["sums"][part] += np.asarray(counts["sums"][p.blob].total())[here] / m
        products = counts["products"][p.blob].total()
        out["taylor"][part] += np.asarray(products)[here] if np.ndim(products) else 0.0
        count[part] += 1
    return {key: value / np.maximum(count, 1) for key, value in out.items()}


def producer_l1(net: Any, graph: Graph, group: Group) -> np.ndarray:
    """Per channel of a group, the L1 norm of its filters summed over the group's producers."""
    total = np.zeros(group.width)
    for use in graph.uses:
        if use.kind == "producer" and graph.root(use.layout.segments[0].group) == group.id:
            weights = net.params[use.layer][0].data
            axis = use.params[0][1]
            rows = np.moveaxis(weights, axis, 0)
            total[graph.channels(use.layout)[1]] += np.abs(rows.reshape(rows.shape[0], -1)).sum(axis=1)
    return total


def collect_layer_data(
    net_path: str | Path,
    weights: str | Path,
    layers: list[str],
    images: int | None = None,
    taylor: bool = False,
    feed: Feed | None = None,
    workers: int | None = None,
    address: str | None = None,
) -> dict[str, Any]:
    """Everything the pruning criteria read (LayerData), per layer, from one
    pass (and a backward pass per batch for `taylor`): the statistics of the layer's channel
    group (none for a layer that cannot be trimmable, e.g. the classifier), its weights and the
    mean |x| of its inputs. `workers`/`address` split the images among Ray workers."""
    net_param, graph = net_graph(net_path, allow_inexact=True)
    data = data_source(net_param, images, feed)
    groups = groups_having(graph, layers)
    plan = measure_plan(graph, groups, {})
    blobs = list(dict.fromkeys(p.blob for points in plan.values() for p in points))
    types = {layer.name: layer for layer in layers_in_phase(net_param, "TEST")}
    bottoms = {name: (types[name].bottom[0], types[name].type == "Convolution") for name in layers}
    options = {"blobs": blobs, "bottoms": bottoms, "taylor": taylor}
    net = load_net(net_path, weights)
    if wanted(workers, address):
        jobs = shard_jobs(criteria_pass, Path(net_path), Path(weights), data, options)
        counts = merge(run_shards(jobs, workers, address, "statistics"))
    else:
        counts = criteria_pass(net, data, options)
    return {name: layer_data(net, graph, name, groups, plan, counts, taylor) for name in layers}


def layer_data(net: Any, graph: Graph, name: str, groups: dict, plan: dict, counts: dict, taylor: bool) -> Any:
    """One layer's LayerData from the pass's counts and the (masked) net's weights."""
    params = net.params[name]
    sums = group_sums(plan[name], counts, groups[name].width) if name in groups else {}
    return LayerData(
        weights=params[0].data.copy(),
        bias=params[1].data.copy() if len(params) > 1 else None,
        zeros=sums.get("zeros"),
        positions=1,
        images=counts["images"],
        activation_sum=sums.get("sums"),
        taylor=sums.get("taylor") if taylor else None,
        input_abs_mean=np.asarray(counts["inputs"][name].total()) / counts["images"],
        l1=producer_l1(net, graph, groups[name]) if name in groups else None,
    )
