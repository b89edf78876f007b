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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.caffemodel import count_params
from pytrim.caffeio.env import blas_config, load_caffe, set_blas_threads
from pytrim.caffeio.netcheck import NetShapes, check_model, probe
from pytrim.caffeio.proto import layers_in_phase, read_net
from pytrim.export.runtimes import RUNTIMES, TITLES, Refused, caffe_nets, caveats, forwards

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


def shape_params(net_param: Any, shapes: NetShapes) -> int:
    """Parameters from the net's shapes, a blob shared by several layers (`param { name }`) once."""
    specs = {layer.name: [spec.name for spec in layer.param] for layer in layers_in_phase(net_param, "TEST")}
    seen: set[str] = set()
    total = 0
    for name, blobs in shapes.params.items():
        for index, shape in enumerate(blobs):
            shared = specs.get(name, [])[index] if index < len(specs.get(name, [])) else ""
            if not (shared and shared in seen):
                total += int(np.prod(shape))
            seen.add(shared)
    return total


def size(net_path: str | Path, weights: str | Path | None = None) -> dict[str, Any]:
    """Parameters, MACs per image and caffemodel bytes of a net (the parameters from the
    caffemodel when there is one, else from the net's shapes)."""
    shapes = probe(net_path) if weights is None else check_model(net_path, weights)
    net_param = read_net(net_path)
    params = count_params(weights) if weights else shape_params(net_param, shapes)
    found = {"params": params, "macs": macs(net_param, shapes)}
    return found | ({"bytes": Path(weights).stat().st_size} if weights else {})


def sample(forward: Callable[[], Any], passes: int) -> float:
    """Seconds per forward pass over `passes` passes."""
    start = time.perf_counter()
    for _ in range(passes):
        forward()
    return (time.perf_counter() - start) / passes


def passes_per_sample(forward: Callable[[], Any], min_seconds: float) -> int:
    """How many forward passes make one sample last at least `min_seconds`."""
    once = sample(forward, 1)
    return max(1, int(np.ceil(min_seconds / max(once, 1e-6))))


def time_forward(forwards: list[Callable[[], Any]], batch: int, repeats: int = 7,
                 min_seconds: float = 0.05) -> dict[str, Any]:  # fmt: skip
    """Interleaved forward times of nets of one batch size (the first is the reference), each a
    callable running one forward pass: per net the median seconds per pass, the median ratio
    reference / net, and the spread of that ratio over the rounds."""
    counts = [passes_per_sample(forward, min_seconds) for forward in forwards]  # also the warm-up
    rounds = [[sample(f, n) for f, n in zip(forwards, counts, strict=True)] for _ in range(max(1, repeats))]
    seconds = [statistics.median(r[i] for r in rounds) for i in range(len(forwards))]
    ratios = [statistics.median(r[0] / r[i] for r in rounds) for i in range(len(forwards))]
    spreads = [spread([r[0] / r[i] for r in rounds]) for i in range(len(forwards))]
    return {"batch": batch, "repeats": repeats, "seconds": seconds, "speedup": ratios, "spread": spreads}


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


UNSTEADY = 0.2  # a timing whose rounds disagree by more than this (relative spread) is not believed
# A channel cut removes multiply-adds and the passes over the channels it removes: a time ratio
# beyond this many times the MACs ratio is not what a cut can do (a busy machine, a cache effect),
# so it is marked instead of printed as a fact.
IMPLAUSIBLE = 1.5


def doubt(speedup: float, wobble: float, macs_ratio: float | None) -> str | None:
    """Why a time ratio is not credible, or None: its rounds disagree, or it exceeds the MACs
    ratio by more than IMPLAUSIBLE."""
    if wobble > UNSTEADY:
        return f"its rounds disagree by {wobble:.0%}: the machine was busy"
    if macs_ratio and speedup > IMPLAUSIBLE * macs_ratio:
        return f"{speedup:.2f}x is beyond {IMPLAUSIBLE:g}x the MACs ratio {macs_ratio:.2f}x: no channel cut does that"
    return None


def doubtful(cost: dict[str, Any], batch: int | str) -> str | None:
    """Why the Caffe timing of `cost` at `batch` is not credible, or None."""
    found = cost.get(f"speedup_batch{batch}")
    return None if found is None else doubt(found, cost.get(f"spread_batch{batch}", 0), cost.get("macs_ratio"))


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


def with_weights(nets: list[tuple[Path, Path | None]], tmp: Path) -> list[tuple[Path, Path]]:
    """Every net with a caffemodel: a net without one gets its fillers' values, saved."""
    caffe, found = load_caffe(), []
    for index, (net, weights) in enumerate(nets):
        saved = weights
        if saved is None:
            saved = tmp / f"fillers{index}.caffemodel"
            caffe.Net(str(net), caffe.TEST).save(str(saved))
        found.append((Path(net), Path(saved)))
    return found


def time_runtime(runtime: str, nets: list[tuple[Path, Path]], batch: int, threads: int, repeats: int,
                 tmp: Path) -> dict[str, Any]:  # fmt: skip
    """One runtime's interleaved timing of the nets at one batch size and thread count (or why
    it cannot run them)."""
    built = forwards(runtime, nets, batch, threads, tmp)
    if isinstance(built, Refused):
        return {"refused": built.reason}
    timed = time_forward(built, batch, repeats)
    del built
    return timed | {"threads": threads, "caveats": caveats(runtime, nets)}


def runtime_cost(nets: list[tuple[Path, Path]], entries: list[dict[str, Any]], batches: list[int], repeats: int,
                 runtimes: tuple[str, ...], thread_counts: list[int], tmp: Path) -> dict[str, Any]:  # fmt: skip
    """Every runtime at every thread count and batch: the timings, and in each entry its speedup,
    spread and, where it is not credible, why (entry["runtimes"][runtime]["threadsT"][batch])."""
    timing: dict[str, Any] = {}
    for runtime in runtimes:
        for threads in thread_counts:
            for batch in batches:
                timed = time_runtime(runtime, nets, batch, threads, repeats, tmp)
                timing.setdefault(runtime, {}).setdefault(f"threads{threads}", {})[str(batch)] = timed
                for index, entry in enumerate(entries, start=1):
                    place = entry.setdefault("runtimes", {}).setdefault(runtime, {}).setdefault(f"threads{threads}", {})
                    place[str(batch)] = speed_of(timed, index, entry.get("macs_ratio"))
    return timing


def speed_of(timed: dict[str, Any], index: int, macs_ratio: float | None) -> dict[str, Any]:
    """One net's speedup in a timing, with its spread and, if it is not credible, why."""
    if "refused" in timed:
        return {"refused": timed["refused"]}
    speedup, wobble = timed["speedup"][index], timed["spread"][index]
    found = {"speedup": speedup, "spread": wobble, "doubt": doubt(speedup, wobble, macs_ratio)}
    return found | ({"caveats": timed["caveats"]} if timed["caveats"] else {})


def compare_cost(reference: tuple[Path, Path | None], others: list[tuple[Path, Path | None]], repeats: int = 5,
                 threads: int | None = None, batches: list[int] | None = None, layers: bool = False,
                 runtimes: tuple[str, ...] = RUNTIMES,
                 thread_counts: list[int] | None = None) -> dict[str, Any]:  # fmt: skip
    """Size of the reference and of each other net, their ratios (reference / other: > 1 is
    smaller or faster), and forward-time speedups in each runtime (Caffe, OpenCV's DNN, ONNX
    Runtime) at each batch size and thread count (default: 1 and every core, or `threads`),
    the nets timed interleaved in this process. Caffe at the most threads also gives the flat
    `speedup_batchN` keys; with `layers`, the speedups of Caffe's MAC layers and of the others
    at each batch size (by_layer)."""
    load_caffe()
    most = threads or os.cpu_count() or 1
    counts = thread_counts or sorted({1, most})
    base = size(*reference)
    entries = [size(*other) for other in others]
    for entry in entries:
        entry.update({f"{key}_ratio": base[key] / entry[key] for key in ("params", "macs", "bytes") if key in base})
    timing: dict[str, Any] = {}
    chosen = [] if repeats < 1 else batches or timing_batches(reference[0])
    with tempfile.TemporaryDirectory(prefix="pytrim-time-") as tmp:
        nets = with_weights([reference, *others], Path(tmp))
        timing["runtimes"] = runtime_cost(nets, entries, chosen, repeats, runtimes, counts, Path(tmp))
        for batch in chosen if "caffe" in runtimes else []:
            caffe_keys(timing, entries, batch, max(counts))
            if layers:
                split_layers(timing, entries, nets, batch, Path(tmp))
    set_blas_threads(most)
    return {"reference": base, "nets": entries, "timing": timing, "threads": max(counts), "thread_counts": counts,
            "runtimes": list(runtimes), **blas_config()}  # fmt: skip


def caffe_keys(timing: dict[str, Any], entries: list[dict[str, Any]], batch: int, threads: int) -> None:
    """Caffe's timing at `threads` as the flat keys every report reads (speedup_batchN, spread_batchN)."""
    timed = timing["runtimes"]["caffe"][f"threads{threads}"][str(batch)]
    timing[str(batch)] = timed
    for entry, speedup, wobble in zip(entries, timed["speedup"][1:], timed["spread"][1:], strict=True):
        entry[f"speedup_batch{batch}"] = speedup
        entry[f"spread_batch{batch}"] = wobble


def split_layers(timing: dict[str, Any], entries: list[dict[str, Any]], nets: list[tuple[Path, Path]], batch: int,
                 tmp: Path) -> None:  # fmt: skip
    """Where Caffe's forward time goes at one batch size (by_layer), into the timing and the entries."""
    built = caffe_nets(nets, batch, tmp)
    split = timing[str(batch)]["by_layer"] = by_layer(built, batch)
    del built  # before the next batch's nets are built (VGG-16's take gigabytes)
    for index, entry in enumerate(entries, start=1):
        entry[f"mac_layers_speedup_batch{batch}"] = split["mac_layers_speedup"][index]
        entry[f"other_layers_speedup_batch{batch}"] = split["other_layers_speedup"][index]
        entry[f"other_layers_share_batch{batch}"] = split["other_layers_share"]


def cost_of_cut(net: Path, weights: Path, trimmed_net: Path, trimmed_weights: Path, repeats: int = 5) -> dict:
    """One trimmed net against its original (compare_cost), flattened: the trimmed net's
    sizes and ratios, speedups per runtime and batch, and the timing's threads and CPU."""
    cost = compare_cost((net, weights), [(trimmed_net, trimmed_weights)], repeats)
    return {**cost["nets"][0], "reference": cost["reference"], "threads": cost["threads"],
            "blas_core": cost["blas_core"], "cpu": cost["cpu"]}  # fmt: skip


def speedups(cost: dict[str, Any], runtime: str = "caffe", threads: str | None = None) -> list[tuple]:
    """(batch, speedup or None, doubt or refusal) of one runtime at `threads` ("threads1";
    default: the flat keys, Caffe at every core), batch by batch."""
    if threads is None and runtime == "caffe":
        batches = sorted((k.removeprefix("speedup_batch") for k in cost if k.startswith("speedup_batch")), key=int)
        return [(b, cost[f"speedup_batch{b}"], doubtful(cost, b)) for b in batches]
    found = ((cost.get("runtimes") or {}).get(runtime) or {}).get(threads or "", {})
    return [
        (b, s.get("speedup"), s.get("doubt") or s.get("refused"))
        for b, s in sorted(found.items(), key=lambda i: int(i[0]))
    ]


def speed_text(speed: dict[str, Any]) -> str:
    """'1.48x' or '1.48x (not credible: ...)' or 'not run: ...'."""
    if "refused" in speed:
        return f"not run ({speed['refused']})"
    return f"{speed['speedup']:.2f}x" + (f" (not credible: {speed['doubt']})" if speed.get("doubt") else "")


def cost_text(cost: dict[str, Any]) -> str:
    """'; Caffe 1.48x faster at batch 1, 1.61x at batch 8 (2 threads); OpenCV DNN ...' per
    runtime at one thread and every core (empty without timing)."""
    parts = []
    for runtime, by_threads in (cost.get("runtimes") or {}).items():
        for threads, by_batch in by_threads.items():
            cells = [f"{speed_text(speed)} at batch {batch}" for batch, speed in by_batch.items()]
            count = threads.removeprefix("threads")
            parts.append(f"{TITLES[runtime]} on {count} thread{'' if count == '1' else 's'}: {', '.join(cells)}")
    return "; " + "; ".join(parts) if parts else ""
