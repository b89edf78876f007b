"""The whole machinery on any net with filler weights and generated images.

For nets whose trained weights or data are not at hand (VGG-16's published weights and
ImageNet; ResNet-50, GoogLeNet, MobileNet from the model-zoo generators): random images of
the net's input size as LMDBs, a train_val that reads them (a deploy net gets Data layers
and a SoftmaxWithLoss in place of its Softmax), filler weights whose BatchNorm statistics
come from one TRAIN-phase pass (so activations stay in range, as in a trained net), then the
same commands as a real run: collect, choose a fraction of every trimmable channel group,
cut, verify, a few solver iterations. Each step is a child process (pytrim.runner) whose
wall time, peak resident memory and JSON result go into report.json, with the coverage:
which Convolution/InnerProduct layers can be trimmed and why the others cannot.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffe_env import caffe_pb2
from pytrim.datasets import write_lmdb
from pytrim.errors import BadInput
from pytrim.files import read_json, write_json
from pytrim.protoutil import read_net, read_solver, write_text
from pytrim.runner import ChildResult, run_child, run_step
from pytrim.train import write_solver


@dataclass
class Options:
    """What a synthetic run does."""

    fraction: float = 0.25  # of every trimmable group's channels cut
    images: int = 8
    batch: int = 4
    solver_iters: int = 2
    allow_inexact: bool = False
    layers: list[str] | None = None  # default: every trimmable group
    solver: Path | None = None


def input_shape(net: Any) -> tuple[int, int, int]:
    """(channels, height, width) of a deploy net's input, or of a train_val's crops."""
    for layer in net.layer:
        if layer.type == "Input":
            return tuple(int(d) for d in layer.input_param.shape[0].dim[1:4])  # type: ignore[return-value]
    if net.input:
        dims = net.input_shape[0].dim if net.input_shape else net.input_dim
        return tuple(int(d) for d in dims[1:4])  # type: ignore[return-value]
    data = [layer for layer in net.layer if layer.type == "Data"]
    if data and data[0].transform_param.crop_size:
        channels = max(1, len(data[0].transform_param.mean_value)) if data[0].transform_param.mean_value else 3
        side = int(data[0].transform_param.crop_size)
        return channels, side, side
    raise BadInput("the net has no Input layer and no crop size: give its deploy prototxt")


def _data_layer(net: Any, phase: str, source: Path, batch: int) -> Any:
    pb2 = caffe_pb2()
    layer = pb2.LayerParameter(name="data", type="Data", top=["data", "label"])
    layer.include.add(phase=getattr(pb2, phase))
    layer.transform_param.scale = 1 / 64.0
    layer.transform_param.mean_value.append(128.0)
    layer.data_param.source, layer.data_param.batch_size = str(source), batch
    layer.data_param.backend = pb2.DataParameter.LMDB
    return layer


def train_val(net: Any, train: Path, test: Path, batch: int) -> Any:
    """A train_val reading the generated LMDBs: its Data layers re-pointed, or, for a deploy
    net, Data layers instead of its Input and a loss in place of its final Softmax (and
    BatchNorm left to pick its statistics by phase)."""
    out = type(net)()
    out.CopyFrom(net)
    del out.input[:], out.input_shape[:], out.input_dim[:]
    layers = [layer for layer in out.layer if layer.type not in ("Input", "Data", "Accuracy", "SoftmaxWithLoss")]
    for layer in layers:
        if layer.type == "BatchNorm":
            layer.batch_norm_param.ClearField("use_global_stats")
    last = layers[-1]
    if last.type == "Softmax":
        layers.pop()
    scores = last.bottom[0] if last.type == "Softmax" else last.top[0]
    pb2 = caffe_pb2()
    loss = pb2.LayerParameter(name="loss", type="SoftmaxWithLoss", bottom=[scores, "label"], top=["loss"])
    accuracy = pb2.LayerParameter(name="accuracy", type="Accuracy", bottom=[scores, "label"], top=["accuracy"])
    accuracy.include.add(phase=pb2.TEST)
    del out.layer[:]
    out.layer.extend([_data_layer(net, "TRAIN", train, batch), _data_layer(net, "TEST", test, batch)])
    out.layer.extend([*layers, loss, accuracy])
    return out


def generate(net_path: Path, out: Path, opts: Options) -> tuple[Path, Path, int]:
    """Random images of the net's input size (train/val LMDBs), the synthetic train_val and
    a deploy copy (the original, for a deploy net); returns them and the number of classes."""
    net = read_net(net_path)
    channels, height, width = input_shape(net)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (opts.images, channels, height, width), dtype=np.uint8)
    classes = 2
    labels = rng.integers(0, classes, opts.images).astype(np.int64)
    write_lmdb(pixels, labels, out / "train_lmdb", progress=False)
    write_lmdb(pixels, labels, out / "val_lmdb", progress=False)
    tv = write_text(train_val(net, out / "train_lmdb", out / "val_lmdb", opts.batch), out / "train_val.prototxt")
    deploy = None if any(layer.type == "Data" for layer in net.layer) else net_path
    return tv, deploy, classes


def make_weights(net: str, out: str) -> None:
    """Filler weights, with BatchNorm statistics from one TRAIN-phase pass over the images."""
    from pytrim.caffe_env import load_caffe

    caffe = load_caffe()
    caffe.set_random_seed(1701)
    trained = caffe.Net(net, caffe.TRAIN)
    trained.forward()
    trained.save(out)


def timing(done: ChildResult) -> dict[str, Any]:
    return {"seconds": done.seconds, "peak_rss_mb": done.peak_rss_mb}


def groups_and_coverage(net: Path, allow_inexact: bool) -> tuple[list[str], dict[str, Any]]:
    from pytrim.collect import net_graph
    from pytrim.cut import coverage, trimmable

    net_param, graph = net_graph(net, allow_inexact=allow_inexact)
    return list(trimmable(graph)), coverage(graph, net_param)


def pipeline(tv: Path, deploy: Path | None, weights: Path, out: Path, layers: list[str], opts: Options) -> dict:
    """collect -> choose -> cut -> verify, each a child with a JSON result."""
    steps, logs = {}, out / "logs"
    w = ["--weights", str(weights)]
    steps["collect"] = run_step("collect", ["--net", str(tv), *w, "--out", str(out / "stats.h5"), "--quiet"],
                                logs / "collect.log")  # fmt: skip
    ratios = [f"{name}={opts.fraction}" for name in layers]
    steps["choose"] = run_step("choose", ["--stats", str(out / "stats.h5"), "--layers", ",".join(layers), *w,
                                          "--out", str(out / "selection.json"), "--ratio", *ratios],
                               logs / "choose.log")  # fmt: skip
    inexact = ["--allow-inexact"] if opts.allow_inexact else []
    deploy_args = ["--deploy", str(deploy)] if deploy else []
    steps["cut"], steps["verify"] = cut_and_verify(tv, weights, out / "selection.json", out / "cut", logs, "",
                                                   deploy_args + inexact, inexact)  # fmt: skip
    return steps


def cut_and_verify(tv: Path, weights: Path, selection: Path, folder: Path, logs: Path, suffix: str,
                   cut_extra: list[str], verify_extra: list[str]) -> tuple[ChildResult, ChildResult]:  # fmt: skip
    """`pytrim cut` of a selection into `folder`, then `pytrim verify` of that cut (logs
    cut<suffix>.log and verify<suffix>.log)."""
    w = ["--net", str(tv), "--weights", str(weights), "--selection", str(selection)]
    cut = run_step("cut", [*w, "--out-dir", str(folder), *cut_extra], logs / f"cut{suffix}.log")
    verify = run_step("verify", [*w, "--trimmed-net", str(folder / "train_val.prototxt"), "--trimmed-weights",
                                 str(folder / "trimmed.caffemodel"), "--quiet", *verify_extra],
                      logs / f"verify{suffix}.log")  # fmt: skip
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


def exact_part(tv: Path, weights: Path, out: Path, selection: Path, inexact: set[str]) -> dict[str, Any] | None:
    """With inexact groups cut too, a second cut of the exact groups alone, verified: the
    exact cuts are proven within the tolerance, the inexact ones measured."""
    if not inexact:
        return None
    chosen = read_json(selection, "selection")
    chosen["layers"] = [e for e in chosen["layers"] if e["layer"] not in inexact]
    exact = write_json(out / "selection-exact.json", chosen)
    _, done = cut_and_verify(tv, weights, exact, out / "cut-exact", out / "logs", "-exact", [], [])
    return done.result


def run(net_path: Path, out: Path, opts: Options, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Generate data and weights, then collect -> choose -> cut -> verify -> train, timed."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    tv, deploy, _ = generate(net_path, out, opts)
    weights = out / "filler.caffemodel"
    log(f"filler weights -> {weights}")
    code = f"from pytrim.synthetic import make_weights; make_weights({str(tv)!r}, {str(weights)!r})"
    steps = {"weights": run_child([sys.executable, "-c", code], out / "logs/weights.log", "filler weights")}
    layers, cover = groups_and_coverage(tv, opts.allow_inexact)
    layers = opts.layers or layers
    log(f"collect, choose ({opts.fraction:.0%} of {len(layers)} groups), cut, verify")
    steps |= pipeline(tv, deploy, weights, out, layers, opts)
    log(f"train: {opts.solver_iters} solver iterations")
    steps["train"] = retrain(out, opts.solver, opts.solver_iters)
    cut, verify = steps["cut"].result, steps["verify"].result
    inexact = set(cut.get("inexact", {}))
    file_mb = weights.stat().st_size / 2**20
    report = {
        "net": str(net_path),
        "images": opts.images,
        "caffemodel_mb": round(file_mb, 1),
        "params_before": cut["params_before"],
        "params_after": cut["params_after"],
        "widths": cut["widths"],
        "steps": {name: timing(done) for name, done in steps.items()},
        "coverage": cover,
        "verify": {key: verify[key] for key in ("ok", "exact", "max_relative_diff", "max_abs_diff", "inexact")},
        "cut_rss_over_caffemodel": round(steps["cut"].peak_rss_mb / file_mb, 2),
        "total_seconds": round(time.monotonic() - start, 1),
    }
    exact = exact_part(tv, weights, out, out / "selection.json", inexact)
    if exact is not None:
        report["verify_exact_groups"] = {key: exact[key] for key in ("ok", "exact", "max_relative_diff")}
    write_json(out / "report.json", report)
    return report
