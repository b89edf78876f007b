"""Collect activation statistics: exact per-channel zero counts (APoZ) of a TEST-phase net.

APoZ of channel c = (number of zero outputs of c after the ReLU) / (N images x M positions).
The net runs whole `forward()` passes over its TEST data, every image exactly once
(pytrim.data.batches), and only counts are kept. Channels are counted where the channel
graph (pytrim.graph) says a group's activations are: its ReLU outputs (after BatchNorm and
Scale), several of them for a group joined by Eltwise (the APoZ of channel c is then the
mean over the ReLU outputs that carry it); where a group meets no ReLU (Caffe's LeNet has
none after conv1/conv2) the outputs <= 0 of its producers are counted, the zeros a ReLU would
make, and the statistics say so (`relu` False). `collect_layer_data` adds, in the same pass,
everything the other criteria of pytrim.criteria read.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffe_env import gpu_device
from pytrim.data import Feed, batches, data_source
from pytrim.distributed import wanted
from pytrim.errors import BadInput, StatsMismatch
from pytrim.files import sha256_file, together
from pytrim.graph import Graph, Group, build_graph
from pytrim.netcheck import load_net, probe
from pytrim.protoutil import layers_in_phase, read_net, write_text


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


def net_graph(net_path: str | Path, allow_inexact: bool = False) -> tuple[Any, Graph]:
    """The NetParameter and the TEST-phase channel graph of a prototxt (shapes from Caffe)."""
    net_param = read_net(net_path)
    return net_param, build_graph(net_param, probe(net_path).blobs, allow_inexact=allow_inexact)


def collect_targets(graph: Graph, layers: list[str] | None = None) -> dict[str, Group]:
    """The groups to measure: those of `layers` (any producer or member name), or every
    trimmable group; keyed by the name asked for (default: the group's name)."""
    from pytrim.cut import group_of, trimmable

    if not layers:
        return trimmable(graph)
    return {name: group_of(graph, name) for name in layers}


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


class ZeroCounter:
    """Accumulates, after each full forward pass, the zero count of every channel of the
    measured blobs over the first `take` images of the batch (no activation is kept).

    The comparison goes into a preallocated boolean buffer, which is then summed as bytes
    along the contiguous position axis: about twice as fast as np.count_nonzero(axis=...),
    which matters because collection must cost little more than the forward pass itself.
    """

    def __init__(self, net: Any, blobs: list[str]) -> None:
        self.net = net
        shapes = {blob: net.blobs[blob].data.shape for blob in blobs}
        self.zeros = {blob: np.zeros(shape[1], dtype=np.int64) for blob, shape in shapes.items()}
        self.positions = {blob: int(np.prod(shape[2:])) for blob, shape in shapes.items()}
        self.buffers = {
            blob: np.empty((shape[0], shape[1], self.positions[blob]), dtype=bool) for blob, shape in shapes.items()
        }
        self.images = 0

    def update(self, take: int) -> None:
        for blob in self.zeros:
            data = self.net.blobs[blob].data
            flat = data[:take].reshape(take, data.shape[1], -1)
            zero = self.buffers[blob][:take]
            np.less_equal(flat, 0, out=zero)
            per_image = np.add.reduce(zero.view(np.uint8), axis=2, dtype=np.int32)
            self.zeros[blob] += per_image.sum(axis=0, dtype=np.int64)
        self.images += take


class FractionCounter(ZeroCounter):
    """The same counts from a statistics net (pytrim.statsnet): Caffe computes per image and
    channel the fraction of non-zero positions, and only those N x C numbers are read."""

    def __init__(self, net: Any, blobs: list[str], positions: dict[str, int]) -> None:
        from pytrim.statsnet import frac_blob

        self.net = net
        self.fractions = {blob: frac_blob(blob) for blob in blobs}
        self.zeros = {blob: np.zeros(net.blobs[frac].data.shape[1], np.int64) for blob, frac in self.fractions.items()}
        self.positions = positions
        self.images = 0

    def update(self, take: int) -> None:
        from pytrim.statsnet import zeros_from_fractions

        for blob, frac in self.fractions.items():
            self.zeros[blob] += zeros_from_fractions(self.net.blobs[frac].data[:take], self.positions[blob])
        self.images += take


def _counter(net_path: Path, weights: Path, blobs: list[str], device: bool) -> ZeroCounter:
    """Host counting on the net itself, or device counting on its statistics copy."""
    net = load_net(net_path, weights)
    if not device:
        return ZeroCounter(net, blobs)
    from pytrim.statsnet import write_stats_net

    positions = {blob: int(np.prod(net.blobs[blob].data.shape[2:])) for blob in blobs}
    ndims = {blob: net.blobs[blob].data.ndim for blob in blobs}
    with tempfile.TemporaryDirectory() as tmp:
        stats_net = load_net(write_stats_net(net_path, ndims, Path(tmp) / "stats.prototxt"), weights)
    return FractionCounter(stats_net, blobs, positions)


def prepare(net_path: str | Path, layers: list[str] | None, tmp: Path, means: bool) -> tuple[Path, dict, dict, dict]:
    """The prototxt to run (a measuring copy when a ReLU output is overwritten in place), the
    groups, their measure points and (with `means`) the blobs whose means folding needs."""
    from pytrim.fold import mean_blobs

    net_param, graph = net_graph(net_path, allow_inexact=True)  # measuring never hurts; cutting decides
    groups = collect_targets(graph, layers)
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
        stats[name] = LayerStats(name, group.width, counts.images, points, members, group.blocks)
    return stats


def count_here(run_path: Path, weights: Path, data: Any, blobs: list[str], folded: dict, opts: dict) -> Counts:
    """One pass in this process (host counting, or device counting with a statistics net)."""
    from pytrim.fold import MeanSums

    device = gpu_device() is not None if opts.get("device") is None else opts["device"]
    counter = _counter(run_path, weights, blobs, device)
    sums = MeanSums(counter.net, folded)
    for take in batches(counter.net, data, "APoZ", opts.get("progress", True)):
        counter.update(take)
        sums.update(take)
    return Counts(counter.zeros, counter.positions, counter.images, sums.means() if folded else {})


def apoz_pass(net: Any, data: Any, options: dict[str, Any], first_batch: int = 0) -> dict[str, Any]:
    """Zero counts of options["blobs"] and, per batch, the sums of options["folded"] (a
    shard's pass; pytrim.shards.merge adds shards up)."""
    from pytrim.fold import MeanSums

    counter, sums = ZeroCounter(net, options["blobs"]), MeanSums(net, options["folded"], first_batch)
    for take in batches(net, data, "APoZ", progress=False):
        counter.update(take)
        sums.update(take)
    return {"zeros": counter.zeros, "positions": counter.positions, "images": counter.images, "means": sums.sums}


def count_sharded(run_path: Path, weights: Path, data: Any, blobs: list[str], folded: dict, opts: dict) -> Counts:
    """The same pass split into shards of whole batches, run by workers (pytrim.distributed)
    and merged exactly."""
    from pytrim.distributed import run_shards
    from pytrim.shards import merge, shard_jobs

    jobs = shard_jobs("collect", run_path, weights, data, {"blobs": blobs, "folded": folded})
    results = run_shards(jobs, opts["workers"], opts.get("address"), "APoZ")
    merged = merge(results)
    means = {blob: np.asarray(total.total()) / merged["images"] for blob, total in merged["means"].items()}
    return Counts(merged["zeros"], merged["positions"], merged["images"], means, len(results))


def collect(
    net_path: str | Path,
    weights: str | Path,
    layers: list[str] | None = None,
    limit: int | None = None,
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
    data = data_source(read_net(net_path), limit, feed)
    opts = {"device": device_counting, "progress": progress, "workers": workers, "address": address}
    count = count_sharded if wanted(workers, address) else count_here
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pytrim-collect-") as tmp:
        run_path, groups, plan, folded = prepare(net_path, layers, Path(tmp), means)
        blobs = list(dict.fromkeys(p.blob for points in plan.values() for p in points))
        counts = count(run_path, Path(weights), data, blobs, folded, opts)
    source = {"net": str(net_path), "weights": str(weights), "data": str(data.source), "shards": counts.shards}
    stats = assemble(plan, groups, counts)
    return Stats(stats, sha256_file(weights), source, time.monotonic() - start, counts.means)


def save_stats(stats: Stats, path: str | Path) -> Path:
    """Write statistics to HDF5 (atomically): per group its APoZ, mean, std and, per point,
    the blob and the exact zero counts (layers/<order>/points/<i>; names are attributes,
    since layer names may hold a '/')."""
    import h5py

    with together([path]) as (partial,), h5py.File(partial, "w") as handle:
        handle.attrs["weights_sha256"] = stats.weights_sha256
        handle.attrs["seconds"] = stats.seconds
        for key, value in stats.source.items():
            handle.attrs[f"source_{key}"] = value
        for order, layer in enumerate(stats.layers.values()):
            group = handle.create_group(f"layers/{order}")
            group["apoz"] = layer.apoz
            group.attrs.update(name=layer.layer, width=layer.width, N=layer.images, mean=layer.mean, std=layer.std)
            group.attrs.update(relu=layer.relu, members=layer.members, blocks=layer.blocks)
            for i, p in enumerate(layer.points):
                point = group.create_group(f"points/{i}")
                point["zeros"] = p.zeros
                point.attrs.update(
                    blob=p.blob, offset=p.offset, start=p.start, length=p.length, relu=p.relu, M=p.positions
                )
        for i, (blob, mean) in enumerate(stats.means.items()):
            handle[f"means/{i}"] = mean
            handle[f"means/{i}"].attrs["blob"] = blob
    return Path(path)


def _read_stats(handle: Any) -> Stats:
    layers = {}
    for order in sorted(handle["layers"], key=int):
        g = handle["layers"][order]
        points = []
        for i in sorted(g["points"], key=int):
            a = g["points"][i].attrs
            zeros = np.asarray(g["points"][i]["zeros"], dtype=np.int64)
            points.append(Point(str(a["blob"]), int(a["offset"]), int(a["start"]), int(a["length"]), bool(a["relu"]),
                                zeros, int(a["M"])))  # fmt: skip
        name = str(g.attrs["name"])
        members = [str(m) for m in g.attrs["members"]]
        blocks = int(g.attrs["blocks"])
        layers[name] = LayerStats(name, int(g.attrs["width"]), int(g.attrs["N"]), points, members, blocks)
    source = {k[len("source_") :]: str(v) for k, v in handle.attrs.items() if k.startswith("source_")}
    means = {str(d.attrs["blob"]): np.asarray(d) for d in handle.get("means", {}).values()}
    return Stats(layers, str(handle.attrs["weights_sha256"]), source, float(handle.attrs["seconds"]), means)


def load_stats(path: str | Path) -> Stats:
    """Read a statistics file written by save_stats; a damaged file is one error naming it."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"statistics file not found: {path}")
    try:
        with h5py.File(path, "r") as handle:
            return _read_stats(handle)
    except (OSError, KeyError, ValueError) as exc:
        raise BadInput(f"{path}: not a readable pytrim statistics file ({exc})") from None


def check_stats_match(stats: Stats, weights: str | Path) -> None:
    """Refuse statistics measured on other weights than `weights`."""
    digest = sha256_file(weights)
    if digest != stats.weights_sha256:
        raise StatsMismatch(
            f"the statistics were measured on {stats.source.get('weights', 'other weights')} "
            f"(sha256 {stats.weights_sha256[:12]}), not on {weights} (sha256 {digest[:12]}): collect them again"
        )


def table(stats: Stats) -> str:
    """The paper's table form: mean APoZ per group."""
    lines = [f"{'layer':<20} {'width':>6} {'N':>7} {'M':>6} {'mean APoZ':>10} {'std':>8}  note"]
    for name, layer in stats.layers.items():
        note = "" if layer.relu else "no ReLU: outputs <= 0 counted"
        if len(layer.points) > 1:
            note = f"mean over {len(layer.points)} outputs ({', '.join(p.blob for p in layer.points)}) {note}"
        lines.append(
            f"{name:<20} {layer.width:>6} {layer.images:>7} {layer.positions:>6} "
            f"{layer.mean:>9.2%} {layer.std:>8.4f}  {note.strip()}"
        )
    return "\n".join(lines)


def histograms(stats: Stats, out_dir: str | Path) -> list[Path]:
    """One PNG histogram of APoZ per layer (the paper's figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, layer in stats.layers.items():
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.hist(layer.apoz * 100, bins=50, range=(0, 100), color="#4477aa")
        ax.axvline(layer.mean * 100, color="k", linestyle="--", label=f"mean {layer.mean:.1%}")
        ax.axvline((layer.mean + layer.std) * 100, color="#cc3311", linestyle=":", label="mean + 1 std")
        ax.set(
            xlabel="APoZ (%)", ylabel="neurons", title=f"{name}: {stats.widths[name]} neurons, {layer.images} images"
        )
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"apoz_{name.replace('/', '_')}.png"
        with together([path]) as (partial,):
            fig.savefig(partial, dpi=90, format="png")
        plt.close(fig)
        written.append(path)
    return written


class ExtraSums:
    """What the other criteria read, summed over images in the same pass as the zero counts:
    per channel of each measured blob the post-ReLU sum and the per-image |mean over
    positions of activation x gradient| (for an in-place ReLU the blob's diff is the gradient
    before the ReLU, whose product with the post-ReLU activation is the same); per input of
    each named layer (channel of a convolution, flattened input of an InnerProduct) the sum
    of mean |x|. Sums are per-batch float64 terms (OrderedSum: shards merge exactly)."""

    def __init__(self, net: Any, blobs: list[str], bottoms: dict[str, tuple[str, bool]], taylor: bool,
                 first_batch: int = 0) -> None:  # fmt: skip
        from pytrim.shards import OrderedSum

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


def criteria_pass(net: Any, data: Any, options: dict[str, Any], first_batch: int = 0) -> dict[str, Any]:
    """Zero counts and ExtraSums over `data` (with a backward pass per batch for Taylor)."""
    taylor = options["taylor"]
    counter = ZeroCounter(net, options["blobs"])
    extra = ExtraSums(net, options["blobs"], options["bottoms"], taylor, first_batch)
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
            total += np.abs(np.moveaxis(weights, axis, 0).reshape(group.width, -1)).sum(axis=1)
    return total


def collect_layer_data(
    net_path: str | Path,
    weights: str | Path,
    layers: list[str],
    limit: int | None = None,
    taylor: bool = False,
    feed: Feed | None = None,
    workers: int | None = None,
    address: str | None = None,
) -> dict[str, Any]:
    """Everything the pruning criteria read (pytrim.criteria.LayerData), per layer, from one
    pass (and a backward pass per batch for `taylor`): the statistics of the layer's channel
    group (none for a layer that cannot be trimmable, e.g. the classifier), its weights and the
    mean |x| of its inputs. `workers`/`address` split the images among Ray workers."""
    net_param, graph = net_graph(net_path, allow_inexact=True)
    data = data_source(net_param, limit, feed)
    groups = layer_groups(graph, layers)
    plan = measure_plan(graph, groups, {})
    blobs = list(dict.fromkeys(p.blob for points in plan.values() for p in points))
    types = {layer.name: layer for layer in layers_in_phase(net_param, "TEST")}
    bottoms = {name: (types[name].bottom[0], types[name].type == "Convolution") for name in layers}
    options = {"blobs": blobs, "bottoms": bottoms, "taylor": taylor}
    net = load_net(net_path, weights)
    if wanted(workers, address):
        from pytrim.distributed import run_shards
        from pytrim.shards import merge, shard_jobs

        jobs = shard_jobs("criteria", Path(net_path), Path(weights), data, options)
        counts = merge(run_shards(jobs, workers, address, "statistics"))
    else:
        counts = criteria_pass(net, data, options)
    return {name: layer_data(net, graph, name, groups, plan, counts, taylor) for name in layers}


def layer_groups(graph: Graph, layers: list[str]) -> dict[str, Group]:
    """The channel group of each layer that has one (not the classifier)."""
    from pytrim.cut import group_of
    from pytrim.errors import UnsupportedTopology

    groups = {}
    for name in layers:
        with contextlib.suppress(UnsupportedTopology):
            groups[name] = group_of(graph, name)
    return groups


def layer_data(net: Any, graph: Graph, name: str, groups: dict, plan: dict, counts: dict, taylor: bool) -> Any:
    """One layer's LayerData from the pass's counts and the (masked) net's weights."""
    from pytrim.criteria import LayerData

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
