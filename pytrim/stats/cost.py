"""What a net costs: parameters, multiply-adds (MACs) per image, caffemodel bytes, and forward
time measured by Caffe.

MACs are counted from the net's own shapes (as Caffe builds it): a Convolution does, per
output element, (input channels / group) x kernel multiply-adds, i.e. its weights' count per
output channel; a Deconvolution does, per input element, its weights' count per input
channel; an InnerProduct, its weights' count per output vector. Other layers are not counted
(their cost is small beside these, and the usual MACs figures leave them out too).

Forward time: the nets (a reference and the nets compared with it) become Input nets of one
batch size (pytrim.caffeio.proto.input_net) with the same random input, are warmed up, then
timed interleaved, net after net, `repeats` times, each sample long enough to be measured;
the median per net and the median of the per-round ratios to the reference are kept. An
absolute time is a property of the machine; the ratios are what the reports give. The BLAS
thread count is fixed by the caller (a child process started with it) and recorded.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.caffemodel import count_params
from pytrim.caffeio.env import blas_config, load_caffe, set_blas_threads
from pytrim.caffeio.netcheck import NetShapes, check_model, probe
from pytrim.caffeio.proto import input_net, layers_in_phase, read_net, write_text

COUNTED = ("Convolution", "Deconvolution", "InnerProduct")


def layer_macs(net_param: Any, shapes: NetShapes) -> dict[str, int]:
    """Multiply-adds per image of every Convolution, Deconvolution and InnerProduct layer."""
    out = {}
    for layer in layers_in_phase(net_param, "TEST"):
        if layer.type not in COUNTED or layer.name in out or not shapes.params.get(layer.name):
            continue
        weights = int(np.prod(shapes.params[layer.name][0]))
        if layer.type == "Deconvolution":
            blob = shapes.blobs[layer.bottom[0]]
            per_unit, units = weights // blob[1], int(np.prod(blob[1:]))
        else:
            blob = shapes.blobs[layer.top[0]]
            spec = layer.inner_product_param if layer.type == "InnerProduct" else layer.convolution_param
            per_unit, units = weights // int(spec.num_output), int(np.prod(blob[1:]))
        out[layer.name] = per_unit * units
    return out


def macs(net_param: Any, shapes: NetShapes) -> int:
    """Multiply-adds per image (pytrim.stats.cost.layer_macs, summed)."""
    return sum(layer_macs(net_param, shapes).values())


def size(net_path: str | Path, weights: str | Path | None = None) -> dict[str, Any]:
    """Parameters, MACs per image and caffemodel bytes of a net (the parameters from the
    caffemodel when there is one, else from the net's shapes)."""
    shapes = probe(net_path) if weights is None else check_model(net_path, weights)
    params = count_params(weights) if weights else sum(int(np.prod(s)) for p in shapes.params.values() for s in p)
    found = {"params": params, "macs": macs(read_net(net_path), shapes)}
    return found | ({"bytes": Path(weights).stat().st_size} if weights else {})


def timing_nets(nets: list[tuple[Path, Path | None]], batch: int, tmp: Path) -> list[Any]:
    """Each net as an Input net of `batch` images with its weights, all fed one random input."""
    caffe = load_caffe()
    built, rng = [], np.random.default_rng(0)
    for index, (net_path, weights) in enumerate(nets):
        shapes = probe(net_path).blobs
        path = write_text(input_net(read_net(net_path), shapes, batch), tmp / f"timed{index}.prototxt")
        net = caffe.Net(str(path), caffe.TEST)
        if weights is not None:
            net.copy_from(str(weights))
        built.append(net)
    for name in built[0].inputs:
        data = rng.random(built[0].blobs[name].data.shape, dtype=np.float32)
        for net in built:
            net.blobs[name].data[...] = data if name == built[0].inputs[0] else 0
    return built


def sample(net: Any, forwards: int) -> float:
    """Seconds per forward pass over `forwards` passes."""
    start = time.perf_counter()
    for _ in range(forwards):
        net.forward()
    return (time.perf_counter() - start) / forwards


def forwards_per_sample(net: Any, min_seconds: float) -> int:
    """How many forward passes make one sample last at least `min_seconds`."""
    once = sample(net, 1)
    return max(1, int(np.ceil(min_seconds / max(once, 1e-6))))


def time_forward(built: list[Any], batch: int, repeats: int = 7, min_seconds: float = 0.05) -> dict[str, Any]:
    """Interleaved forward times of the `built` timing nets of one batch size (the first is
    the reference): per net the median seconds per forward pass and the median ratio
    reference / net."""
    counts = [forwards_per_sample(net, min_seconds) for net in built]  # also the warm-up
    rounds = [[sample(net, n) for net, n in zip(built, counts, strict=True)] for _ in range(max(1, repeats))]
    seconds = [statistics.median(r[i] for r in rounds) for i in range(len(built))]
    ratios = [statistics.median(r[0] / r[i] for r in rounds) for i in range(len(built))]
    spreads = [spread([r[0] / r[i] for r in rounds]) for i in range(len(built))]
    return {"batch": batch, "repeats": repeats, "seconds": seconds, "speedup": ratios, "spread": spreads,
            **blas_config()}  # fmt: skip


def layer_seconds(built: list[Any], rounds: int = 5) -> list[dict[str, float]]:
    """Per net, seconds per layer type of one forward pass: each layer run alone (Caffe's
    ForwardFromTo) on the blobs of a full pass, the nets interleaved round by round (a busy
    spell of the machine falls on all of them), the fastest of `rounds` per layer."""
    best = [[float("inf")] * len(net.layers) for net in built]
    for net in built:
        net.forward()
    for _ in range(max(1, rounds)):
        for net, times in zip(built, best, strict=True):
            for index in range(len(net.layers)):
                start = time.perf_counter()
                net._forward(index, index)
                times[index] = min(times[index], time.perf_counter() - start)
    found = []
    for net, times in zip(built, best, strict=True):
        kinds: dict[str, float] = {}
        for layer, seconds in zip(net.layers, times, strict=True):
            kinds[layer.type] = kinds.get(layer.type, 0.0) + seconds
        found.append(kinds)
    return found


def by_layer(built: list[Any], batch: int, rounds: int = 5) -> dict[str, Any]:
    """Where the forward time goes, per timing net: seconds per layer type, and the speedup of
    the MAC layers (Convolution, Deconvolution, InnerProduct) and of all the others against
    the first net, with the others' share of the first net's time."""
    kinds = layer_seconds(built, rounds)
    mac = [sum(v for k, v in found.items() if k in COUNTED) for found in kinds]
    other = [sum(v for k, v in found.items() if k not in COUNTED) for found in kinds]
    return {
        "batch": batch,
        "seconds_by_type": kinds,
        "mac_layers_speedup": [mac[0] / m if m else None for m in mac],
        "other_layers_speedup": [other[0] / o if o else None for o in other],
        "other_layers_share": other[0] / (mac[0] + other[0]),
    }


UNSTEADY = 0.2  # a timing whose rounds disagree by more than this (relative spread) is flagged


def unsteady(cost: dict[str, Any], batch: int | str) -> bool:
    """Whether the timing of `cost` at `batch` was taken on a busy machine (see spread)."""
    return cost.get(f"spread_batch{batch}", 0) > UNSTEADY


def spread(values: list[float]) -> float:
    """How much the rounds of a timing disagree: the interquartile range over the median (0 for
    fewer than 4 rounds: too few to tell). Large when the machine was busy while timing."""
    if len(values) < 4:
        return 0.0
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return float((q3 - q1) / median) if median else 0.0


def timing_batches(net_path: str | Path) -> list[int]:
    """Batch 1, and 8 for a full-size (ImageNet-like, input side >= 200) net, else 32."""
    shapes = probe(net_path).blobs
    inputs = [shape for shape in shapes.values() if len(shape) == 4]
    side = min(inputs[0][2:]) if inputs else 0
    return [1, 8 if side >= 200 else 32]


def compare_cost(reference: tuple[Path, Path | None], others: list[tuple[Path, Path | None]], repeats: int = 5,
                 threads: int | None = None, batches: list[int] | None = None,
                 layers: bool = False) -> dict[str, Any]:  # fmt: skip
    """Size of the reference and of each other net, their ratios (reference / other: > 1 is
    smaller or faster), and forward-time speedups at each batch size, timed interleaved in
    this process with `threads` BLAS threads (default: every core); with `layers`, also the
    speedups of the MAC layers and of the others at each batch size (by_layer)."""
    load_caffe()
    used = set_blas_threads(threads or os.cpu_count() or 1)
    base = size(*reference)
    entries = [size(*other) for other in others]
    for entry in entries:
        entry.update({f"{key}_ratio": base[key] / entry[key] for key in ("params", "macs", "bytes") if key in base})
    timing = {}
    for batch in [] if repeats < 1 else batches or timing_batches(reference[0]):
        with tempfile.TemporaryDirectory(prefix="pytrim-time-") as tmp:
            built = timing_nets([reference, *others], batch, Path(tmp))  # built once for both timings
        timed = time_forward(built, batch, repeats)
        timing[str(batch)] = timed
        for entry, speedup, wobble in zip(entries, timed["speedup"][1:], timed["spread"][1:], strict=True):
            entry[f"speedup_batch{batch}"] = speedup
            entry[f"spread_batch{batch}"] = wobble
        if layers:
            split = timed["by_layer"] = by_layer(built, batch)
            for index, entry in enumerate(entries, start=1):
                entry[f"mac_layers_speedup_batch{batch}"] = split["mac_layers_speedup"][index]
                entry[f"other_layers_speedup_batch{batch}"] = split["other_layers_speedup"][index]
                entry[f"other_layers_share_batch{batch}"] = split["other_layers_share"]
        del built  # before the next batch's nets are built (VGG-16's take gigabytes)
    return {"reference": base, "nets": entries, "timing": timing, "threads": used, **blas_config()}


def cost_of_cut(net: Path, weights: Path, trimmed_net: Path, trimmed_weights: Path, repeats: int = 5) -> dict:
    """One trimmed net against its original (compare_cost), flattened: the trimmed net's
    sizes and ratios, speedups per batch, and the timing's BLAS threads and CPU."""
    cost = compare_cost((net, weights), [(trimmed_net, trimmed_weights)], repeats)
    return {**cost["nets"][0], "reference": cost["reference"], "threads": cost["threads"],
            "blas_core": cost["blas_core"], "cpu": cost["cpu"]}  # fmt: skip


def cost_text(cost: dict[str, Any]) -> str:
    """', 1.48x faster at batch 1, 1.61x at batch 8' (empty without timing)."""
    speedups = [(key.removeprefix("speedup_batch"), value) for key, value in cost.items() if key.startswith("speedup")]
    parts = [(f"{value:.2f}x faster at batch {batch}" if i == 0 else f"{value:.2f}x at batch {batch}")
             + (" (unsteady: the machine was busy)" if unsteady(cost, batch) else "")
             for i, (batch, value) in enumerate(speedups)]  # fmt: skip
    return ", " + ", ".join(parts) if parts else ""
