"""Collect activation statistics: exact per-channel zero counts (APoZ) of a TEST-phase net.

APoZ of channel c = (number of zero outputs of c after the ReLU) / (N images x M positions).
The net runs whole `forward()` passes over its TEST data, every image exactly once
(pytrim.feeds.source.batches), and only counts are kept. Channels are counted where the
channel graph (pytrim.graph) says a group's activations are: its ReLU outputs (after
BatchNorm and Scale), several of them for a group joined by Eltwise (the APoZ of channel c
is then the mean over the ReLU outputs that carry it); where a group meets no ReLU (Caffe's
LeNet has none after conv1/conv2) the outputs <= 0 of its producers are counted, the zeros a
ReLU would make, and the statistics say so (`relu` False). The pass runs in this process, or
in shards on Ray workers (pytrim.scale), merged exactly.
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.env import gpu_device
from pytrim.caffeio.netcheck import load_net
from pytrim.caffeio.proto import layers_in_phase, read_net, write_text
from pytrim.core.errors import BadInput
from pytrim.core.files import sha256_file
from pytrim.feeds.source import DataSource, Feed, batches, data_source
from pytrim.graph.build import net_graph
from pytrim.graph.model import Graph, Group
from pytrim.graph.queries import groups_of
from pytrim.scale.cluster import run_shards, wanted
from pytrim.scale.shards import merge, shard_jobs
from pytrim.stats.means import MeanSums, mean_blobs
from pytrim.stats.statsnet import frac_blob, write_stats_net, zeros_from_fractions


@dataclass
class Point:
    """One place a group is counted: channels [offset, offset + length) of `blob` are the
    group's channels [start, start + length); `zeros` per channel over `positions` each."""

    blob: str
    offset: int
    start: int
    length: int
    relu: bool
    zeros: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    positions: int = 1


@dataclass
class LayerStats:
    """Zero counts of one channel group (named by its first producer) over `images` images."""

    layer: str
    width: int
    images: int
    points: list[Point]
    members: list[str] = field(default_factory=list)
    blocks: int = 1  # a grouped convolution needs the same number cut from each of these blocks
    parts: list[tuple[str, np.ndarray]] = field(default_factory=list)  # each keeps one (pytrim.graph.model.Group)

    @property
    def relu(self) -> bool:
        return all(p.relu for p in self.points)

    @property
    def apoz(self) -> np.ndarray:
        """Per channel, the mean APoZ over the points that carry it."""
        total, count = np.zeros(self.width), np.zeros(self.width)
        for p in self.points:
            total[p.start : p.start + p.length] += p.zeros / float(self.images * p.positions)
            count[p.start : p.start + p.length] += 1
        return total / np.maximum(count, 1)

    @property
    def zeros(self) -> np.ndarray:
        """Zero counts when one point carries the whole group (the usual case)."""
        if len(self.points) != 1:
            raise ValueError(f"{self.layer}: counted at {len(self.points)} places; use apoz")
        return self.points[0].zeros

    @property
    def positions(self) -> int:
        return self.points[0].positions

    @property
    def mean(self) -> float:
        return float(self.apoz.mean())

    @property
    def std(self) -> float:
        return float(self.apoz.std())


@dataclass
class Stats:
    """Statistics of several groups, with the fingerprint of the weights they were measured on."""

    layers: dict[str, LayerStats]
    weights_sha256: str
    source: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    means: dict[str, np.ndarray] = field(default_factory=dict)  # blob -> mean where consumers read it

    @property
    def widths(self) -> dict[str, int]:
        return {name: layer.width for name, layer in self.layers.items()}

    def find(self, name: str) -> LayerStats:
        """The statistics of the group that layer `name` belongs to (any producer or member)."""
        for layer in self.layers.values():
            if name == layer.layer or name in layer.members:
                return layer
        raise BadInput(f"no statistics for layer {name!r} (measured: {', '.join(self.layers)})")


def shadowed(graph: Graph, net_param: Any) -> dict[int, str]:
    """ReLU outputs that a later in-place layer overwrites (e.g. a BatchNorm after the ReLU):
    after a forward pass the blob no longer holds them. layer index -> blob."""
    layers = layers_in_phase(net_param, "TEST")
    found = {}
    for blob, _, index in graph.relu_points:
        later = [i for i, kind, _ in graph.writers.get(blob, []) if i > index and kind != "Dropout"]
        if later:
            found[index] = blob
    return {i: b for i, b in found.items() if layers[i].type == "ReLU"}


def measuring_net(net_param: Any, graph: Graph) -> tuple[Any, dict[str, str]]:
    """A TEST-phase copy in which every shadowed ReLU writes a blob of its own (the next
    in-place writer reads it and writes the old name), and the renames (old -> new)."""
    layers = [type(layer)() for layer in layers_in_phase(net_param, "TEST")]
    for copy, layer in zip(layers, layers_in_phase(net_param, "TEST"), strict=True):
        copy.CopyFrom(layer)
    renames = {}
    for index, blob in shadowed(graph, net_param).items():
        new = f"pytrim_relu_{layers[index].name}"
        layers[index].top[0] = new
        for later in layers[index + 1 :]:
            later.bottom[:] = [new if b == blob else b for b in later.bottom]
            if blob in later.top:
                break
        renames[blob] = new
    net = type(net_param)()
    net.CopyFrom(net_param)
    del net.layer[:]
    net.layer.extend(layers)
    return net, renames


def measure_plan(graph: Graph, groups: dict[str, Group], renames: dict[str, str]) -> dict[str, list[Point]]:
    points = {}
    for name, group in groups.items():
        points[name] = [Point(renames.get(b, b), off, start, n, relu) for b, off, start, n, relu in group.measure]
    return points


LANE_LIMIT = 255  # images a byte lane can count before it must be emptied into the totals


class ZeroCounter:
    """Accumulates, after each full forward pass, the zero count of every channel of the
    measured blobs over the first `take` images of the batch (no activation is kept).

    Counting must cost little beside the forward pass, and it is bound by memory traffic.
    So each blob is compared once, into a byte per value (1 for a zero); the bytes of all
    images are added eight positions at a time as 64-bit words (each byte a lane counting
    one position, up to LANE_LIMIT images), and the lanes are summed into channels only
    when they are full or the counts are read. (Measured in the pass: a third less time
    than a byte sum per image and channel; counting threads gained nothing.)
    """

    def __init__(self, net: Any, blobs: list[str]) -> None:
        self.net = net
        shapes = {blob: net.blobs[blob].data.shape for blob in blobs}
        self.channels = {blob: shape[1] for blob, shape in shapes.items()}
        self.positions = {blob: int(np.prod(shape[2:])) for blob, shape in shapes.items()}
        padded = {blob: -(-self.channels[blob] * self.positions[blob] // 8) * 8 for blob in blobs}
        self.bytes = {blob: np.zeros((shapes[blob][0], padded[blob]), dtype=bool) for blob in blobs}
        self.lanes = {blob: np.zeros(padded[blob] // 8, dtype=np.uint64) for blob in blobs}
        self.totals = {blob: np.zeros(self.channels[blob], dtype=np.int64) for blob in blobs}
        self.pending = 0  # images in the lanes
        self.images = 0

    def update(self, take: int) -> None:
        if self.pending + take > LANE_LIMIT:
            self.empty_lanes()
        for blob in self.bytes:
            self.count(blob, take)
        self.pending += take
        self.images += take

    def count(self, blob: str, take: int) -> None:
        data = self.net.blobs[blob].data[:take].reshape(take, -1)
        zero = self.bytes[blob][:take]
        np.less_equal(data, 0, out=zero[:, : data.shape[1]])
        for start in range(0, take, LANE_LIMIT):  # a batch larger than a lane holds
            if start:
                self.empty_lanes([blob])
            self.lanes[blob] += np.add.reduce(zero[start : start + LANE_LIMIT].view(np.uint64), axis=0)

    def empty_lanes(self, blobs: list[str] | None = None) -> None:
        for blob in blobs or list(self.lanes):
            lanes = self.lanes[blob].view(np.uint8)[: self.channels[blob] * self.positions[blob]]
            self.totals[blob] += np.add.reduce(lanes.reshape(self.channels[blob], -1), axis=1, dtype=np.int64)
            self.lanes[blob][:] = 0
        if blobs is None:
            self.pending = 0

    @property
    def zeros(self) -> dict[str, np.ndarray]:
        """Per blob, the zero count of each channel so far."""
        self.empty_lanes()
        return {blob: totals.copy() for blob, totals in self.totals.items()}


class FractionCounter:
    """The same counts from a statistics net (pytrim.stats.statsnet): Caffe computes per image and
    channel the fraction of non-zero positions, and only those N x C numbers are read."""

    def __init__(self, net: Any, blobs: list[str], positions: dict[str, int]) -> None:
        self.net = net
        self.fractions = {blob: frac_blob(blob) for blob in blobs}
        self.zeros = {blob: np.zeros(net.blobs[frac].data.shape[1], np.int64) for blob, frac in self.fractions.items()}
        self.positions = positions
        self.images = 0

    def update(self, take: int) -> None:
        for blob, frac in self.fractions.items():
            self.zeros[blob] += zeros_from_fractions(self.net.blobs[frac].data[:take], self.positions[blob])
        self.images += take


def _counter(net_path: Path, weights: Path, blobs: list[str], device: bool) -> ZeroCounter | FractionCounter:
    """Host counting on the net itself, or device counting on its statistics copy."""
    net = load_net(net_path, weights)
    if not device:
        return ZeroCounter(net, blobs)

    positions = {blob: int(np.prod(net.blobs[blob].data.shape[2:])) for blob in blobs}
    ndims = {blob: net.blobs[blob].data.ndim for blob in blobs}
    with tempfile.TemporaryDirectory() as tmp:
        stats_net = load_net(write_stats_net(net_path, ndims, Path(tmp) / "stats.prototxt"), weights)
    return FractionCounter(stats_net, blobs, positions)


def prepare(net_path: str | Path, layers: list[str] | None, tmp: Path, means: bool) -> tuple[Path, dict, dict, dict]:
    """The prototxt to run (a measuring copy when a ReLU output is overwritten in place), the
    groups, their measure points and (with `means`) the blobs whose means folding needs."""
    net_param, graph = net_graph(net_path, allow_inexact=True)  # measuring never hurts; cutting decides
    groups = groups_of(graph, layers)
    measured, renames = measuring_net(net_param, graph)
    run_path = Path(net_path) if not renames else write_text(measured, tmp / "measuring.prototxt")
    folded = mean_blobs(graph, list(groups.values())) if means else {}
    return run_path, groups, measure_plan(graph, groups, renames), folded


@dataclass
class Counts:
    """What a pass over the images gave: zero counts and positions per blob, the images,
    and the means consumers read (for folding)."""

    zeros: dict[str, np.ndarray]
    positions: dict[str, int]
    images: int
    means: dict[str, np.ndarray]
    shards: int = 1  # how many workers' shards were merged (1: this process)


def assemble(plan: dict[str, list[Point]], groups: dict[str, Group], counts: Counts) -> dict[str, LayerStats]:
    """Per group its statistics, from the counts of the blobs it is measured at."""
    stats = {}
    for name, points in plan.items():
        for p in points:
            p.zeros = counts.zeros[p.blob][p.offset : p.offset + p.length].copy()
            p.positions = counts.positions[p.blob]
        group = groups[name]
        members = group.producers + group.members
        stats[name] = LayerStats(name, group.width, counts.images, points, members, group.blocks, group.parts)
    return stats


def count_here(run_path: Path, weights: Path, data: Any, blobs: list[str], folded: dict, opts: dict) -> Counts:
    """One pass in this process (host counting, or device counting with a statistics net)."""
    device = gpu_device() is not None if opts.get("device") is None else opts["device"]
    counter = _counter(run_path, weights, blobs, device)
    sums = MeanSums(counter.net, folded)
    for take in batches(counter.net, data, "APoZ", opts.get("progress", True)):
        counter.update(take)
        sums.update(take)
    return Counts(counter.zeros, counter.positions, counter.images, sums.means() if folded else {})


def apoz_pass(net: Any, data: DataSource, options: dict[str, Any]) -> dict[str, Any]:
    """Zero counts of options["blobs"] and, per batch, the sums of options["folded"] (a
    shard's pass; pytrim.scale.shards.merge adds shards up)."""
    counter, sums = ZeroCounter(net, options["blobs"]), MeanSums(net, options["folded"], data.first_batch)
    for take in batches(net, data, "APoZ", progress=False):
        counter.update(take)
        sums.update(take)
    return {"zeros": counter.zeros, "positions": counter.positions, "images": counter.images, "means": sums.sums}


def count_sharded(run_path: Path, weights: Path, data: Any, blobs: list[str], folded: dict, opts: dict) -> Counts:
    """The same pass split into shards of whole batches, run by workers (pytrim.scale.cluster)
    and merged exactly."""

    jobs = shard_jobs(apoz_pass, run_path, weights, data, {"blobs": blobs, "folded": folded})
    results = run_shards(jobs, opts["workers"], opts.get("address"), "APoZ")
    merged = merge(results)
    means = {blob: np.asarray(total.total()) / merged["images"] for blob, total in merged["means"].items()}
    return Counts(merged["zeros"], merged["positions"], merged["images"], means, len(results))


def collect(
    net_path: str | Path,
    weights: str | Path,
    layers: list[str] | None = None,
    images: int | None = None,
    progress: bool = True,
    device_counting: bool | None = None,
    feed: Feed | None = None,
    means: bool = False,
    workers: int | None = None,
    address: str | None = None,
) -> Stats:
    """Count zeros per channel of the groups of `layers` (default: every trimmable group).

    With `device_counting` (the default in GPU mode) Caffe counts inside a statistics copy
    of the net and only N x C fractions per blob reach the host. With `means`, the mean of
    every blob their consumers read is kept too (for --fold-mean). With `workers` (local Ray
    workers) or `address` (a Ray cluster) the images are split among workers."""
    data = data_source(read_net(net_path), images, feed)
    opts = {"device": device_counting, "progress": progress, "workers": workers, "address": address}
    count = count_sharded if wanted(workers, address) else count_here
    start = time.monotonic()
    with ThreadPoolExecutor(1) as hasher, tempfile.TemporaryDirectory(prefix="pytrim-collect-") as tmp:
        digest = hasher.submit(sha256_file, weights)  # read and hashed while Caffe computes
        run_path, groups, plan, folded = prepare(net_path, layers, Path(tmp), means)
        blobs = list(dict.fromkeys(p.blob for points in plan.values() for p in points))
        counts = count(run_path, Path(weights), data, blobs, folded, opts)
        sha256 = digest.result()
    source = {"net": str(net_path), "weights": str(weights), "data": str(data.source), "shards": counts.shards}
    stats = assemble(plan, groups, counts)
    return Stats(stats, sha256, source, time.monotonic() - start, counts.means)
