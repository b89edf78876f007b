"""The whole machinery on any net with random weights and generated inputs.

For nets whose trained weights or data are not at hand (VGG-16's published weights and
ImageNet; ResNet-50, GoogLeNet, MobileNet from the model-zoo generators; a user's deploy
prototxt): every input of the net (Input layers of any name, the old `input:` fields,
MemoryData, or a train_val's data layers) becomes an HDF5Data layer reading generated
random values of its shape; a final Softmax becomes SoftmaxWithLoss (with labels of the right
shape), any other output gets a sum-of-squares loss, so any net trains. The weights are
random and not degenerate whatever the prototxt's fillers say (He-scaled weights, random
biases, Scale gammas and betas; BatchNorm statistics from a TRAIN-phase pass over the
inputs), so that verification compares a net that computes something. Then the same
commands as a real run: collect, choose a fraction of every trimmable channel group, cut,
verify, a few solver iterations, and the cut net's cost. Each step is a child process
(pytrim.core.runner) whose wall time, peak resident memory and JSON result go into
report.json, with the coverage: which Convolution/InnerProduct layers can be trimmed and why
the others cannot.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.env import caffe_pb2, load_caffe, pinned_machine
from pytrim.caffeio.netcheck import probe
from pytrim.caffeio.proto import INPUT_LAYERS, LABELLED, read_net, read_solver, write_solver, write_text
from pytrim.core.errors import BadInput
from pytrim.core.files import read_json, write_json
from pytrim.core.runner import ChildResult, run_child, run_step
from pytrim.graph.build import net_graph
from pytrim.graph.queries import coverage, trimmable


@dataclass
class Options:
    """What a synthetic run does."""

    fraction: float = 0.25  # of every trimmable group's channels cut
    images: int = 8
    batch: int = 4
    finetune_iters: int = 2
    allow_inexact: bool = False
    layers: list[str] | None = None  # default: every trimmable group
    solver: Path | None = None
    repeats: int = 3  # forward-time samples of the original and the cut net (0: no timing)


def data_shape(layer: Any) -> list[int]:
    """(C, H, W) a train_val's data layer gives, from its parameters."""
    t = layer.transform_param
    channels = len(t.mean_value) if len(t.mean_value) > 1 else 1 if layer.type == "Data" and t.mean_value else 3
    if layer.type == "ImageData":
        p = layer.image_data_param
        channels = 3 if p.is_color else 1
        if t.crop_size or p.new_height:
            side = int(t.crop_size) or 0
            return [channels, side or int(p.new_height), side or int(p.new_width)]
    if t.crop_size:
        return [channels, int(t.crop_size), int(t.crop_size)]
    raise BadInput(f"{layer.type} layer {layer.name!r}: its image size is not in the prototxt; give the deploy net")


def input_tops(net: Any) -> dict[str, list[int]]:
    """Every input top of the net and its shape without the batch axis ([] for labels)."""
    found: dict[str, list[int]] = {}
    if net.input:
        shapes = [list(s.dim) for s in net.input_shape] or [list(net.input_dim)]
        found |= {top: [int(d) for d in shapes[min(i, len(shapes) - 1)][1:]] for i, top in enumerate(net.input)}
    for layer in net.layer:
        if layer.type == "Input":
            dims = [list(s.dim) for s in layer.input_param.shape]
            found |= {top: [int(d) for d in dims[min(i, len(dims) - 1)][1:]] for i, top in enumerate(layer.top)}
        elif layer.type == "MemoryData":
            p = layer.memory_data_param
            found |= {layer.top[0]: [int(p.channels), int(p.height), int(p.width)]} | {t: [] for t in layer.top[1:]}
        elif layer.type in INPUT_LAYERS and layer.top[0] not in found:
            found |= {layer.top[0]: data_shape(layer)} | {t: [] for t in layer.top[1:]}
    if not found:
        raise BadInput("the net has no input (Input, MemoryData or data layer) to feed")
    return found


def hdf5_layer(tops: list[str], listing: Path, batch: int, phase: str) -> Any:
    pb2 = caffe_pb2()
    layer = pb2.LayerParameter(name=f"pytrim_data_{phase.lower()}", type="HDF5Data", top=tops)
    layer.include.add(phase=getattr(pb2, phase))
    layer.hdf5_data_param.source, layer.hdf5_data_param.batch_size = str(listing), batch
    return layer


def body(net: Any, tops: list[str], listing: Path, batch: int) -> Any:
    """The net with its inputs read from `listing` (HDF5) in both phases, without its losses
    and accuracies, BatchNorm left to pick its statistics by phase."""
    out = caffe_pb2().NetParameter()
    out.CopyFrom(net)
    del out.input[:], out.input_shape[:], out.input_dim[:], out.layer[:]
    out.layer.extend([hdf5_layer(tops, listing, batch, "TRAIN"), hdf5_layer(tops, listing, batch, "TEST")])
    for layer in net.layer:
        if layer.type not in INPUT_LAYERS and layer.type not in LABELLED:
            copy = out.layer.add()
            copy.CopyFrom(layer)
            if copy.type == "BatchNorm":
                copy.batch_norm_param.ClearField("use_global_stats")
    return out


def add_losses(net: Any) -> list[str]:
    """A loss on every output: SoftmaxWithLoss (and Accuracy) on a final Softmax's scores,
    else a small sum of squares. Returns the label tops the losses need."""
    pb2, labels = caffe_pb2(), []
    consumed = {b for layer in net.layer for b in layer.bottom}
    outputs = [top for layer in net.layer for top in layer.top if top not in consumed]
    for layer in list(net.layer):
        if layer.type == "Softmax" and layer.top[0] in outputs:
            net.layer.remove(layer)
            label = f"pytrim_label_{len(labels)}"
            net.layer.add(name=f"pytrim_loss_{label}", type="SoftmaxWithLoss", bottom=[layer.bottom[0], label],
                          top=[f"pytrim_loss_{len(labels)}"])  # fmt: skip
            accuracy = net.layer.add(
                name=f"pytrim_accuracy_{len(labels)}",
                type="Accuracy",
                bottom=[layer.bottom[0], label],
                top=[f"pytrim_accuracy_{len(labels)}"],
            )
            accuracy.include.add(phase=pb2.TEST)
            outputs.remove(layer.top[0])
            labels.append(label)
    for index, top in enumerate(outputs):
        loss = net.layer.add(
            name=f"pytrim_sumsq_{index}", type="Reduction", bottom=[top], top=[f"pytrim_sumsq_{index}"]
        )
        loss.reduction_param.operation = loss.reduction_param.SUMSQ
        loss.loss_weight.append(1e-4)
    return labels


def write_inputs(shapes: dict[str, list[int]], images: int, labels: set[str], out: Path) -> Path:
    """Random inputs (uniform in [0, 1)) and labels (0 or 1) in an HDF5 file and its list."""
    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(out / "inputs.h5", "w") as handle:
        for top, shape in shapes.items():
            dims = (images, *shape)
            handle[top] = rng.integers(0, 2, dims).astype(np.float32) if top in labels else rng.random(dims, np.float32)
    (out / "inputs.txt").write_text(f"{(out / 'inputs.h5').resolve()}\n")
    return out / "inputs.txt"


def generate(net_path: Path, out: Path, opts: Options) -> tuple[Path, Path | None]:
    """Generated inputs and the synthetic train_val reading them; the deploy net to cut
    alongside (the original, unless it reads its own data)."""
    net = read_net(net_path)
    tops = input_tops(net)
    label_tops = {top for top, shape in tops.items() if not shape}
    listing = write_inputs(tops, opts.images, label_tops, out)
    plain = write_text(body(net, list(tops), listing, opts.batch), out / "body.prototxt")
    shapes = probe(plain).blobs
    synthetic = read_net(plain)
    labels = add_losses(synthetic)
    if labels:
        label_shapes = {top: list(probe_label(synthetic, top, shapes)) for top in labels}
        listing = write_inputs(tops | label_shapes, opts.images, label_tops | set(labels), out)
        synthetic.layer[0].top.extend(labels)
        synthetic.layer[1].top.extend(labels)
    tv = write_text(synthetic, out / "train_val.prototxt")
    deploy = None if any(layer.type in ("Data", "ImageData", "HDF5Data") for layer in net.layer) else net_path
    return tv, deploy


def probe_label(net: Any, label: str, shapes: dict[str, list[int]]) -> list[int]:
    """A SoftmaxWithLoss label's shape without the batch axis: the scores' spatial axes."""
    layer = next(layer for layer in net.layer if layer.type == "SoftmaxWithLoss" and label in layer.bottom)
    return list(shapes[layer.bottom[0]][2:])


def make_weights(net: str, out: str) -> None:
    """Random, not degenerate weights: He-scaled weights, random biases, Scale gammas and
    betas, PReLU slopes; BatchNorm statistics from one TRAIN-phase pass over the inputs."""
    caffe = load_caffe()
    caffe.set_random_seed(1701)
    trained, rng = caffe.Net(net, caffe.TRAIN), np.random.default_rng(1701)
    for name, blobs in trained.params.items():
        kind = trained.layer_dict[name].type
        if kind == "BatchNorm":
            continue
        for index, blob in enumerate(blobs):
            blob.data[...] = random_values(kind, index, blob.data.shape, rng)
    trained.forward()
    trained.save(out)


def random_values(kind: str, index: int, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """One parameter blob's random values (blob `index` of a layer of type `kind`)."""
    if kind == "Scale" and index == 0:
        return rng.uniform(0.5, 1.5, shape)
    if kind == "PReLU":
        return rng.uniform(0.1, 0.3, shape)
    if index == 0 and len(shape) >= 2:
        fan_in = int(np.prod(shape[1:])) if kind != "Deconvolution" else int(shape[0] * np.prod(shape[2:]))
        return rng.normal(0, np.sqrt(2.0 / max(1, fan_in)), shape)
    return rng.normal(0, 0.1, shape)


def timing(done: ChildResult) -> dict[str, Any]:
    return {"seconds": done.seconds, "peak_rss_mb": done.peak_rss_mb}


def groups_and_coverage(net: Path, allow_inexact: bool) -> tuple[list[str], dict[str, Any]]:
    net_param, graph = net_graph(net, allow_inexact=allow_inexact)
    return list(trimmable(graph)), coverage(graph, net_param)


def pipeline(tv: Path, deploy: Path | None, weights: Path, out: Path, layers: list[str], opts: Options) -> dict:
    """collect -> choose -> cut -> verify, each a child with a JSON result."""
    if not layers:
        raise BadInput(f"{tv}: no channel group of this net can be trimmed (see the coverage in {out})")
    steps, logs = {}, out / "logs"
    w = ["--weights", str(weights)]
    steps["collect"] = run_step("collect", ["--net", str(tv), *w, "--out", str(out / "stats.h5"), "--quiet"],
                                logs / "collect.log")  # fmt: skip
    ratios = ",".join(f"{name}={opts.fraction}" for name in layers)
    steps["choose"] = run_step("choose", ["--stats", str(out / "stats.h5"), "--layers", ",".join(layers), *w,
                                          "--out", str(out / "selection.json"), "--ratio", ratios],
                               logs / "choose.log")  # fmt: skip
    inexact = ["--allow-inexact"] if opts.allow_inexact else []
    cut_extra = (["--deploy", str(deploy)] if deploy else []) + ["--repeats", "0"]  # timed on its own (speed)
    steps["cut"], steps["verify"] = cut_and_verify(tv, weights, out / "selection.json", out / "cut", logs, "",
                                                   cut_extra + inexact, inexact)  # fmt: skip
    return steps


def cut_and_verify(tv: Path, weights: Path, selection: Path, folder: Path, logs: Path, suffix: str,
                   cut_extra: list[str], verify_extra: list[str]) -> tuple[ChildResult, ChildResult]:  # fmt: skip
    """`pytrim cut` of a selection into `folder`, then `pytrim verify` of that cut (logs
    cut<suffix>.log and verify<suffix>.log)."""
    w = ["--net", str(tv), "--weights", str(weights), "--selection", str(selection)]
    cut = run_step("cut", [*w, "--out", str(folder), *cut_extra], logs / f"cut{suffix}.log")
    verify = run_step("verify", [*w, "--trimmed-net", str(folder / "train_val.prototxt"), "--trimmed-weights",
                                 str(folder / "trimmed.caffemodel"), "--recipe", str(folder / "recipe.json"),
                                 "--quiet", *verify_extra], logs / f"verify{suffix}.log")  # fmt: skip
    return cut, verify


def retrain(out: Path, solver: Path | None, iterations: int) -> ChildResult:
    """A few solver iterations of the trimmed net (CPU; a fixed rate unless the solver has one)."""
    base = read_solver(solver) if solver else None
    write_solver(
        solver,
        out / "solver.prototxt",
        net=str(out / "cut/train_val.prototxt"),
        base_lr=None if base and base.base_lr else 0.001,
        lr_policy=None if base and base.lr_policy else "fixed",
        max_iter=iterations,
        display=1,
        solver_mode="CPU",
        test_initialization=False,
        clear=["test_iter", "test_interval"],
    )
    args = ["--solver", str(out / "solver.prototxt"), "--weights", str(out / "cut/trimmed.caffemodel")]
    args += ["--out", str(out / "cut/retrained.caffemodel"), "--no-eval"]
    return run_step("train", args, out / "logs/train.log")


def speed(tv: Path, deploy: Path | None, weights: Path, out: Path, repeats: int) -> ChildResult:
    """The cut net's parameters, MACs and forward time against the original (`pytrim speed`)."""
    kind = "deploy" if deploy else "train_val"
    args = ["--net", str(deploy or tv), "--weights", str(weights), "--trimmed-net", str(out / f"cut/{kind}.prototxt")]
    args += ["--trimmed-weights", str(out / "cut/trimmed.caffemodel"), "--repeats", str(repeats)]
    return run_step("speed", args, out / "logs/speed.log")


def exact_part(tv: Path, weights: Path, out: Path, selection: Path, inexact: set[str]) -> dict[str, Any] | None:
    """With inexact groups cut too, a second cut of the exact groups alone, verified: the
    exact cuts are proven within the tolerance, the inexact ones bounded."""
    if not inexact:
        return None
    chosen = read_json(selection, "selection")
    chosen["layers"] = [e for e in chosen["layers"] if e["layer"] not in inexact]
    exact = write_json(out / "selection-exact.json", chosen)
    _, done = cut_and_verify(tv, weights, exact, out / "cut-exact", out / "logs", "-exact", ["--repeats", "0"], [])
    return done.result


def run(net_path: Path, out: Path, opts: Options, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Generate data and weights, then collect -> choose -> cut -> verify -> train, timed."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    tv, deploy = generate(net_path, out, opts)
    weights = out / "random.caffemodel"
    log(f"random weights -> {weights}")
    code = f"from pytrim.experiments.synthetic import make_weights; make_weights({str(tv)!r}, {str(weights)!r})"
    steps = {"weights": run_child([sys.executable, "-c", code], out / "logs/weights.log", "random weights")}
    layers, cover = groups_and_coverage(tv, opts.allow_inexact)
    layers = opts.layers or layers
    log(f"collect, choose ({opts.fraction:.0%} of {len(layers)} groups), cut, verify")
    steps |= pipeline(tv, deploy, weights, out, layers, opts)
    log(f"train: {opts.finetune_iters} solver iterations")
    steps["train"] = retrain(out, opts.solver, opts.finetune_iters)
    steps["speed"] = speed(tv, deploy, weights, out, opts.repeats)
    report = summarize(net_path, opts, weights, steps, cover, time.monotonic() - start)
    exact = exact_part(tv, weights, out, out / "selection.json", set(steps["cut"].result.get("inexact", {})))
    if exact is not None:
        report["verify_exact_groups"] = {key: exact[key] for key in ("ok", "exact", "max_relative_diff")}
    report["machine"] = pinned_machine()
    write_json(out / "report.json", report)
    return report


def summarize(net_path: Path, opts: Options, weights: Path, steps: dict, cover: dict, seconds: float) -> dict:
    """The report of a synthetic run."""
    cut, verify = steps["cut"].result, steps["verify"].result
    file_mb = weights.stat().st_size / 2**20
    keys = ("ok", "exact", "max_relative_diff", "max_abs_diff", "inexact", "inexact_max_relative_diff")
    return {
        "net": str(net_path),
        "images": opts.images,
        "caffemodel_mb": round(file_mb, 1),
        "params_before": cut["params_before"],
        "params_after": cut["params_after"],
        "widths": cut["widths"],
        "cost": steps["speed"].result["nets"][0]
        | {key: steps["speed"].result[key] for key in ("threads", "blas_core")},
        "steps": {name: timing(done) for name, done in steps.items()},
        "coverage": cover,
        "verify": {key: verify[key] for key in keys},
        "cut_rss_over_caffemodel": round(steps["cut"].peak_rss_mb / file_mb, 2),
        "total_seconds": round(seconds, 1),
    }


def summary(report: dict) -> dict:
    """One net's line of the coverage benchmark (coverage.json)."""
    exact = report.get("verify_exact_groups", report["verify"])
    cut, cost = report["steps"]["cut"], report["cost"]
    return {
        **report["coverage"],
        "verify_exact": exact["exact"],
        "verify_exact_max_relative_diff": exact["max_relative_diff"],
        "verify_all_max_relative_diff": report["verify"]["max_relative_diff"],
        "inexact": report["verify"]["inexact"],
        "inexact_max_relative_diff": report["verify"]["inexact_max_relative_diff"],
        "cut_seconds": cut["seconds"],
        "cut_peak_rss_mb": cut["peak_rss_mb"],
        "caffemodel_mb": report["caffemodel_mb"],
        "cut_rss_over_caffemodel": report["cut_rss_over_caffemodel"],
        "params_before": report["params_before"],
        "params_after": report["params_after"],
        "macs_ratio": cost["macs_ratio"],
        **{key: value for key, value in cost.items() if key.startswith("speedup")},
    }
