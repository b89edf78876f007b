"""Collect activation statistics: exact per-channel zero counts (APoZ) of a TEST-phase net.

APoZ of channel c = (number of zero outputs of c after the ReLU) / (N images x M positions).
The net runs whole `forward()` passes over its TEST data, every image exactly once
(pytrim.data.batches), and only the counts are kept. For a layer whose output goes through
no ReLU (Caffe's LeNet has none after conv1/conv2), the count is of outputs <= 0, i.e. the
zeros a ReLU would produce; the statistics say so (`relu` False). `collect_layer_data` adds,
in the same pass, everything the other criteria of pytrim.criteria read.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffe_env import gpu_device
from pytrim.data import batches, data_source
from pytrim.errors import BadInput, StatsMismatch
from pytrim.files import sha256_file, together
from pytrim.graph import layer_by_name, relu_outputs, trimmable_layers
from pytrim.netcheck import load_net
from pytrim.protoutil import read_net


@dataclass
class LayerStats:
    """Zero counts of one layer's output channels over `images` images x `positions` positions."""

    layer: str
    blob: str
    relu: bool
    zeros: np.ndarray
    images: int
    positions: int

    @property
    def apoz(self) -> np.ndarray:
        return self.zeros / float(self.images * self.positions)

    @property
    def mean(self) -> float:
        return float(self.apoz.mean())

    @property
    def std(self) -> float:
        return float(self.apoz.std())


@dataclass
class Stats:
    """Statistics of several layers, with the fingerprint of the weights they were measured on."""

    layers: dict[str, LayerStats]
    weights_sha256: str
    widths: dict[str, int]
    source: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def collect_targets(net_param: Any, layers: list[str] | None = None) -> dict[str, tuple[str, bool]]:
    """layer -> (blob to count zeros in, whether that blob is a ReLU output)."""
    relus = relu_outputs(net_param)
    targets = {}
    for name in layers or trimmable_layers(net_param):
        try:
            layer = layer_by_name(net_param, name)
        except KeyError:
            raise BadInput(f"the net has no layer {name!r}") from None
        targets[name] = (relus.get(name, layer.top[0]), name in relus)
    return targets


class ZeroCounter:
    """Accumulates, after each full forward pass, the zero count of every channel of the
    target blobs over the first `take` images of the batch (no activation is kept).

    The comparison goes into a preallocated boolean buffer, which is then summed as bytes
    along the contiguous position axis: about twice as fast as np.count_nonzero(axis=...),
    which matters because collection must cost little more than the forward pass itself.
    """

    def __init__(self, net: Any, targets: dict[str, tuple[str, bool]]) -> None:
        self.net = net
        self.blobs = {name: blob for name, (blob, _) in targets.items()}
        shapes = {name: net.blobs[blob].data.shape for name, blob in self.blobs.items()}
        self.zeros = {name: np.zeros(shape[1], dtype=np.int64) for name, shape in shapes.items()}
        self.positions = {name: int(np.prod(shape[2:])) for name, shape in shapes.items()}
        self.buffers = {
            name: np.empty((shape[0], shape[1], self.positions[name]), dtype=bool) for name, shape in shapes.items()
        }
        self.images = 0

    def update(self, take: int) -> None:
        for name, blob in self.blobs.items():
            data = self.net.blobs[blob].data
            flat = data[:take].reshape(take, data.shape[1], -1)
            zero = self.buffers[name][:take]
            np.less_equal(flat, 0, out=zero)
            per_image = np.add.reduce(zero.view(np.uint8), axis=2, dtype=np.int32)
            self.zeros[name] += per_image.sum(axis=0, dtype=np.int64)
        self.images += take


class FractionCounter(ZeroCounter):
    """The same counts from a statistics net (pytrim.statsnet): Caffe computes per image and
    channel the fraction of non-zero positions, and only those N x C numbers are read."""

    def __init__(self, net: Any, targets: dict[str, tuple[str, bool]], positions: dict[str, int]) -> None:
        from pytrim.statsnet import frac_blob

        self.net = net
        self.blobs = {name: frac_blob(name) for name in targets}
        self.zeros = {
            name: np.zeros(net.blobs[blob].data.shape[1], dtype=np.int64) for name, blob in self.blobs.items()
        }
        self.positions = positions
        self.images = 0

    def update(self, take: int) -> None:
        from pytrim.statsnet import zeros_from_fractions

        for name, blob in self.blobs.items():
            self.zeros[name] += zeros_from_fractions(self.net.blobs[blob].data[:take], self.positions[name])
        self.images += take


def _counter(net_path: Path, weights: Path, targets: dict[str, tuple[str, bool]], device: bool) -> ZeroCounter:
    """Host counting on the net itself, or device counting on its statistics copy."""
    net = load_net(net_path, weights)
    if not device:
        return ZeroCounter(net, targets)
    from pytrim.statsnet import write_stats_net

    positions = {name: int(np.prod(net.blobs[blob].data.shape[2:])) for name, (blob, _) in targets.items()}
    with tempfile.TemporaryDirectory() as tmp:
        stats_net = load_net(write_stats_net(net_path, targets, Path(tmp) / "stats.prototxt"), weights)
    return FractionCounter(stats_net, targets, positions)


def collect(
    net_path: str | Path,
    weights: str | Path,
    layers: list[str] | None = None,
    limit: int | None = None,
    progress: bool = True,
    device_counting: bool | None = None,
) -> Stats:
    """Count zeros per output channel of `layers` (default: every trimmable layer).

    With `device_counting` (the default in GPU mode) Caffe counts inside a statistics copy
    of the net and only N x C fractions per layer reach the host."""
    net_param = read_net(net_path)
    data = data_source(net_param, limit)
    targets = collect_targets(net_param, layers)
    device = gpu_device() is not None if device_counting is None else device_counting
    counter = _counter(Path(net_path), Path(weights), targets, device)
    start = time.monotonic()
    for take in batches(counter.net, data, "APoZ", progress):
        counter.update(take)
    stats = {
        name: LayerStats(name, blob, relu, counter.zeros[name], counter.images, counter.positions[name])
        for name, (blob, relu) in targets.items()
    }
    return Stats(
        layers=stats,
        weights_sha256=sha256_file(weights),
        widths={name: int(counter.zeros[name].size) for name in targets},
        source={"net": str(net_path), "weights": str(weights), "data": str(data.source)},
        seconds=time.monotonic() - start,
    )


def save_stats(stats: Stats, path: str | Path) -> Path:
    """Write statistics to HDF5 (atomically): per layer apoz, zeros, N, M, mean, std."""
    import h5py

    with together([path]) as (partial,), h5py.File(partial, "w") as handle:
        handle.attrs["weights_sha256"] = stats.weights_sha256
        handle.attrs["seconds"] = stats.seconds
        for key, value in stats.source.items():
            handle.attrs[f"source_{key}"] = value
        for order, (name, layer) in enumerate(stats.layers.items()):
            group = handle.create_group(f"layers/{name}")
            group["apoz"] = layer.apoz
            group["zeros"] = layer.zeros
            group.attrs.update(blob=layer.blob, relu=layer.relu, N=layer.images, M=layer.positions)
            group.attrs.update(mean=layer.mean, std=layer.std, width=stats.widths[name], order=order)
    return Path(path)


def _read_stats(handle: Any) -> Stats:
    groups = sorted(handle["layers"].items(), key=lambda item: int(item[1].attrs["order"]))
    layers = {
        name: LayerStats(
            name,
            str(g.attrs["blob"]),
            bool(g.attrs["relu"]),
            np.asarray(g["zeros"], dtype=np.int64),
            int(g.attrs["N"]),
            int(g.attrs["M"]),
        )
        for name, g in groups
    }
    widths = {name: int(g.attrs["width"]) for name, g in groups}
    source = {k[len("source_") :]: str(v) for k, v in handle.attrs.items() if k.startswith("source_")}
    return Stats(layers, str(handle.attrs["weights_sha256"]), widths, source, float(handle.attrs["seconds"]))


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
    """The paper's table form: mean APoZ per layer."""
    lines = [f"{'layer':<12} {'width':>6} {'N':>7} {'M':>6} {'mean APoZ':>10} {'std':>8}  note"]
    for name, layer in stats.layers.items():
        note = "" if layer.relu else "no ReLU: outputs <= 0 counted"
        lines.append(
            f"{name:<12} {stats.widths[name]:>6} {layer.images:>7} {layer.positions:>6} "
            f"{layer.mean:>9.2%} {layer.std:>8.4f}  {note}"
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
        with together([out_dir / f"apoz_{name}.png"]) as (partial,):
            fig.savefig(partial, dpi=90, format="png")
        plt.close(fig)
        written.append(out_dir / f"apoz_{name}.png")
    return written


class ExtraSums:
    """What the other criteria read, summed over images in the same pass as the zero counts:
    per output channel the post-ReLU sum and the per-image |mean over positions of
    activation x gradient|; per input (channel of a convolution, flattened neuron of an
    InnerProduct) the sum of mean |x| (for an in-place ReLU the blob's diff is the gradient
    before the ReLU, whose product with the post-ReLU activation is the same)."""

    def __init__(self, net_param: Any, targets: dict[str, tuple[str, bool]], taylor: bool) -> None:
        self.blobs = {name: blob for name, (blob, _) in targets.items()}
        self.bottoms = {name: layer_by_name(net_param, name).bottom[0] for name in targets}
        self.conv = {name: layer_by_name(net_param, name).type == "Convolution" for name in targets}
        self.taylor = taylor
        self.sums: dict[str, Any] = {name: 0.0 for name in targets}
        self.products: dict[str, Any] = {name: 0.0 for name in targets}
        self.inputs: dict[str, Any] = {name: 0.0 for name in targets}

    def update(self, net: Any, take: int) -> None:
        for name, blob in self.blobs.items():
            data = net.blobs[blob].data[:take].reshape(take, net.blobs[blob].data.shape[1], -1)
            self.sums[name] = self.sums[name] + np.maximum(data, 0).sum(axis=(0, 2))
            if self.taylor:
                grad = net.blobs[blob].diff[:take].reshape(data.shape)
                self.products[name] = self.products[name] + np.abs((data * grad).mean(axis=2)).sum(axis=0)
            x = np.abs(net.blobs[self.bottoms[name]].data[:take])
            per_input = x.reshape(take, x.shape[1], -1).mean(axis=2) if self.conv[name] else x.reshape(take, -1)
            self.inputs[name] = self.inputs[name] + per_input.sum(axis=0)


def collect_layer_data(
    net_path: str | Path,
    weights: str | Path,
    layers: list[str],
    limit: int | None = None,
    taylor: bool = False,
    masks: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Everything the pruning criteria read (pytrim.criteria.LayerData), per layer, from one
    pass (and a backward pass per batch for `taylor`); `masks` (layer -> bool array of the
    weight's shape) are applied to the weights first."""
    from pytrim.criteria import LayerData

    net_param = read_net(net_path)
    data = data_source(net_param, limit)
    targets = collect_targets(net_param, layers)
    net = load_net(net_path, weights)
    for name, mask in (masks or {}).items():
        net.params[name][0].data[...] *= mask
    counter, extra = ZeroCounter(net, targets), ExtraSums(net_param, targets, taylor)
    for take in batches(net, data, "statistics", progress=False):
        if taylor:
            net.backward()
        counter.update(take)
        extra.update(net, take)
    result = {}
    for name in targets:
        params = net.params[name]
        result[name] = LayerData(
            weights=params[0].data.copy(),
            bias=params[1].data.copy() if len(params) > 1 else None,
            zeros=counter.zeros[name],
            positions=counter.positions[name],
            images=counter.images,
            activation_sum=np.asarray(extra.sums[name]),
            taylor=np.asarray(extra.products[name]) if taylor else None,
            input_abs_mean=np.asarray(extra.inputs[name]) / counter.images,
        )
    return result
