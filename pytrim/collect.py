"""Collect activation statistics: exact per-channel zero counts (APoZ) of a TEST-phase net.

APoZ of channel c = (number of zero outputs of c after the ReLU) / (N images x M positions).
The net runs whole `forward()` passes (a partial pass can skip an in-place ReLU) over its
own TEST Data layer, every image exactly once, and only the counts are kept. For a layer
whose output goes through no ReLU (Caffe's LeNet has none after conv1/conv2), the count is
of outputs <= 0, i.e. the zeros a ReLU would produce; the statistics say so (`relu` False).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffe_env import gpu_device, load_caffe
from pytrim.caffemodel import Caffemodel
from pytrim.datasets import lmdb_entries
from pytrim.evaluate import find_test_data
from pytrim.graph import layer_by_name, relu_outputs, trimmable_layers
from pytrim.protoutil import read_net


class ModelMismatch(ValueError):
    """A caffemodel does not fit a prototxt (the differing layers and shapes are named)."""


class StatsMismatch(ValueError):
    """A statistics file was measured on another net or other weights."""


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


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def check_model_matches(net: Any, model: Caffemodel, net_name: str = "prototxt") -> None:
    """Raise ModelMismatch unless every learnable layer of `net` (a pycaffe Net) gets weights
    of its own shapes from `model`. Done in Python: Caffe aborts the process instead."""
    problems = []
    for name, params in net.params.items():
        if name not in model.layers:
            problems.append(f"{name}: in {net_name} but has no weights in {model.path}")
            continue
        blobs = model.layers[name].blobs
        if len(blobs) != len(params):
            problems.append(f"{name}: {len(params)} blobs in {net_name}, {len(blobs)} in {model.path}")
            continue
        for index, (param, blob) in enumerate(zip(params, blobs, strict=True)):
            want, have = tuple(param.data.shape), blob.shape
            # Legacy 4-d shapes (1, 1, out, in) are accepted by Caffe when the counts agree.
            legacy = len(have) == 4 and len(want) < 4
            if int(np.prod(want)) != int(np.prod(have)) or (not legacy and want != have):
                problems.append(f"{name} blob {index}: shape {want} in {net_name}, {have} in {model.path}")
    if problems:
        raise ModelMismatch(f"{model.path} does not match {net_name}:\n  " + "\n  ".join(problems))


def load_net(net_path: str | Path, weights: str | Path, phase: str = "TEST") -> Any:
    """A pycaffe Net with weights, after checking in Python that the weights fit."""
    caffe = load_caffe()
    read_net(net_path)  # parse errors as Python exceptions
    net = caffe.Net(str(net_path), getattr(caffe, phase))
    with Caffemodel(weights) as model:
        check_model_matches(net, model, str(net_path))
    net.copy_from(str(weights))
    return net


def collect_targets(net_param: Any, layers: list[str] | None = None) -> dict[str, tuple[str, bool]]:
    """layer -> (blob to count zeros in, whether that blob is a ReLU output)."""
    relus = relu_outputs(net_param)
    targets = {}
    for name in layers or trimmable_layers(net_param):
        try:
            layer = layer_by_name(net_param, name)
        except KeyError:
            raise ValueError(f"the net has no layer {name!r}") from None
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
    from tqdm import tqdm

    net_param = read_net(net_path)
    data_layer, _, _ = find_test_data(net_param)
    source = data_layer.data_param.source
    total = lmdb_entries(source)
    if limit is not None:
        total = min(total, limit)
    if total <= 0:
        raise ValueError(f"{source}: no images to collect statistics on")
    targets = collect_targets(net_param, layers)
    if device_counting is None:
        device_counting = gpu_device() is not None
    net = load_net(net_path, weights)
    if device_counting:
        import tempfile

        from pytrim.statsnet import write_stats_net

        positions = {name: int(np.prod(net.blobs[blob].data.shape[2:])) for name, (blob, _) in targets.items()}
        with tempfile.TemporaryDirectory() as tmp:
            stats_path = write_stats_net(net_path, targets, Path(tmp) / "stats.prototxt")
            net = load_net(stats_path, weights)
        counter: ZeroCounter = FractionCounter(net, targets, positions)
    else:
        counter = ZeroCounter(net, targets)
    batch = data_layer.data_param.batch_size
    start = time.monotonic()
    with tqdm(total=total, desc="APoZ", unit="img", disable=not progress, leave=False) as bar:
        for _ in range(math.ceil(total / batch)):
            net.forward()
            take = min(batch, total - counter.images)
            counter.update(take)
            bar.update(take)
    seconds = time.monotonic() - start
    seen, zeros, positions = counter.images, counter.zeros, counter.positions
    widths = {name: int(zeros[name].size) for name in targets}
    stats = {
        name: LayerStats(name, blob, relu, zeros[name], seen, positions[name]) for name, (blob, relu) in targets.items()
    }
    return Stats(
        layers=stats,
        weights_sha256=sha256_file(weights),
        widths=widths,
        source={"net": str(net_path), "weights": str(weights), "data": str(source)},
        seconds=seconds,
    )


def save_stats(stats: Stats, path: str | Path) -> Path:
    """Write statistics to HDF5 (atomically): per layer apoz, zeros, N, M, mean, std."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with h5py.File(partial, "w") as handle:
        handle.attrs["weights_sha256"] = stats.weights_sha256
        handle.attrs["seconds"] = stats.seconds
        for key, value in stats.source.items():
            handle.attrs[f"source_{key}"] = value
        for name, layer in stats.layers.items():
            group = handle.create_group(f"layers/{name}")
            group["apoz"] = layer.apoz
            group["zeros"] = layer.zeros
            group.attrs.update(
                blob=layer.blob,
                relu=layer.relu,
                N=layer.images,
                M=layer.positions,
                mean=layer.mean,
                std=layer.std,
                width=stats.widths[name],
                order=list(stats.layers).index(name),
            )
    partial.replace(path)
    return path


def load_stats(path: str | Path) -> Stats:
    """Read a statistics file written by save_stats."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"statistics file not found: {path}")
    with h5py.File(path, "r") as handle:
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
        ax.set_xlabel("APoZ (%)")
        ax.set_ylabel("neurons")
        ax.set_title(f"{name}: {stats.widths[name]} neurons, {layer.images} images")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"apoz_{name}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def collect_layer_data(
    net_path: str | Path,
    weights: str | Path,
    layers: list[str],
    limit: int | None = None,
    taylor: bool = False,
    masks: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Everything the pruning criteria read (pytrim.criteria.LayerData), per layer.

    One whole forward pass per batch (and a backward pass for `taylor`): per output channel
    the zero count and the sum of the post-ReLU output; per input (channel for a
    convolution, flattened neuron for an InnerProduct) the mean |x|; and with `taylor` the
    per-image |mean over positions of activation x gradient|, summed over images (for an
    in-place ReLU the blob's diff is the gradient before the ReLU, whose product with the
    post-ReLU activation is the same). `masks` (layer -> bool array of the weight's shape)
    are applied to the weights first.
    """
    from pytrim.criteria import LayerData

    net_param = read_net(net_path)
    data_layer, _, _ = find_test_data(net_param)
    total = lmdb_entries(data_layer.data_param.source)
    total = min(total, limit) if limit else total
    targets = collect_targets(net_param, layers)
    bottoms = {name: layer_by_name(net_param, name).bottom[0] for name in layers}
    conv = {name: layer_by_name(net_param, name).type == "Convolution" for name in layers}
    net = load_net(net_path, weights)
    for name, mask in (masks or {}).items():
        net.params[name][0].data[...] *= mask
    batch = data_layer.data_param.batch_size
    shapes = {name: net.blobs[blob].data.shape for name, (blob, _) in targets.items()}
    zeros = {name: np.zeros(shape[1], np.int64) for name, shape in shapes.items()}
    sums = {name: np.zeros(shape[1]) for name, shape in shapes.items()}
    products = {name: np.zeros(shape[1]) for name, shape in shapes.items()}
    inputs: dict[str, np.ndarray] = {}
    seen = 0
    for _ in range(math.ceil(total / batch)):
        net.forward()
        if taylor:
            net.backward()
        take = min(batch, total - seen)
        for name, (blob, _) in targets.items():
            data = net.blobs[blob].data[:take].reshape(take, shapes[name][1], -1)
            zeros[name] += np.count_nonzero(data <= 0, axis=(0, 2))
            sums[name] += np.maximum(data, 0).sum(axis=(0, 2))
            if taylor:
                grad = net.blobs[blob].diff[:take].reshape(data.shape)
                products[name] += np.abs((data * grad).mean(axis=2)).sum(axis=0)
            x = np.abs(net.blobs[bottoms[name]].data[:take])
            per_input = x.reshape(take, x.shape[1], -1).mean(axis=2) if conv[name] else x.reshape(take, -1)
            inputs[name] = inputs.get(name, 0) + per_input.sum(axis=0)
        seen += take
    result = {}
    for name, shape in shapes.items():
        params = net.params[name]
        result[name] = LayerData(
            weights=params[0].data.copy(),
            bias=params[1].data.copy() if len(params) > 1 else None,
            zeros=zeros[name],
            positions=int(np.prod(shape[2:])),
            images=seen,
            activation_sum=sums[name],
            taylor=products[name] if taylor else None,
            input_abs_mean=inputs[name] / seen,
        )
    return result
