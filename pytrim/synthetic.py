"""The whole machinery on a full-size net with filler weights and generated images.

Used for VGG-16 (138,357,544 parameters, 224x224 input) where the published weights and
ImageNet cannot be downloaded: the same commands as a real run (collect, choose, cut,
verify, a few solver iterations), each in a child process (pytrim.runner) whose wall time,
peak resident memory and JSON result are recorded in report.json.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.datasets import write_lmdb
from pytrim.files import write_json
from pytrim.protoutil import in_phase, read_net, read_solver, set_data_sources, write_text
from pytrim.runner import ChildResult, run_child, run_step
from pytrim.train import write_solver


def make_weights(net: str, out: str) -> None:
    """Filler weights: the prototxt's own fillers, seeded, saved as a caffemodel."""
    from pytrim.caffe_env import load_caffe

    caffe = load_caffe()
    caffe.set_random_seed(1701)
    caffe.Net(net, caffe.TEST).save(out)


def timing(done: ChildResult) -> dict[str, Any]:
    return {"seconds": done.seconds, "peak_rss_mb": done.peak_rss_mb}


def generate_data(train_val: Path, out: Path, images: int, batch: int) -> Path:
    """Random uint8 images of the net's input size as train/val LMDBs, and a copy of
    train_val that reads them with a small batch."""
    rng = np.random.default_rng(0)
    net = read_net(train_val)
    data = next(layer for layer in net.layer if layer.type == "Data" and in_phase(layer, "TEST"))
    side = max(256, data.transform_param.crop_size or 224)
    pixels = rng.integers(0, 256, (images, 3, side, side), dtype=np.uint8)
    labels = rng.integers(0, 1000, images).astype(np.int64)
    write_lmdb(pixels, labels, out / "train_lmdb", progress=False)
    write_lmdb(pixels, labels, out / "val_lmdb", progress=False)
    return write_text(
        set_data_sources(net, out / "train_lmdb", out / "val_lmdb", batch=batch), out / "train_val.prototxt"
    )


def pipeline(net: Path, deploy: Path, weights: Path, out: Path, layers: list[str]) -> dict[str, ChildResult]:
    """collect -> choose -> cut -> verify, each a child with a JSON result."""
    steps: dict[str, ChildResult] = {}
    logs = out / "logs"
    steps["collect"] = run_step(
        "collect",
        ["--net", str(net), "--weights", str(weights), "--out", str(out / "stats.h5"), "--plots", str(out), "--quiet"],
        logs / "collect.log",
    )
    steps["choose"] = run_step(
        "choose",
        [
            "--stats",
            str(out / "stats.h5"),
            "--layers",
            ",".join(layers),
            "--weights",
            str(weights),
            "--out",
            str(out / "selection.json"),
        ],
        logs / "choose.log",
    )
    steps["cut"] = run_step(
        "cut",
        [
            "--net",
            str(net),
            "--deploy",
            str(deploy),
            "--weights",
            str(weights),
            "--selection",
            str(out / "selection.json"),
            "--out-dir",
            str(out / "cut"),
        ],
        logs / "cut.log",
    )
    steps["verify"] = run_step(
        "verify",
        [
            "--net",
            str(net),
            "--weights",
            str(weights),
            "--trimmed-net",
            str(out / "cut/train_val.prototxt"),
            "--trimmed-weights",
            str(out / "cut/trimmed.caffemodel"),
            "--selection",
            str(out / "selection.json"),
            "--quiet",
        ],
        logs / "verify.log",
    )
    return steps


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
    return run_step(
        "train", [*args, "--out", str(out / "cut/retrained.caffemodel"), "--no-eval"], out / "logs/train.log"
    )


def run(
    train_val: Path,
    deploy: Path,
    out: Path,
    layers: list[str],
    images: int = 8,
    batch: int = 4,
    solver_iters: int = 2,
    solver: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Generate data and weights, then collect -> choose -> cut -> verify -> train, timed."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    net = generate_data(train_val, out, images, batch)
    weights = out / "filler.caffemodel"
    log(f"filler weights -> {weights}")
    code = f"from pytrim.synthetic import make_weights; make_weights({str(net)!r}, {str(weights)!r})"
    steps = {"weights": run_child([sys.executable, "-c", code], out / "logs/weights.log", "filler weights")}
    log("collect, choose, cut, verify")
    steps |= pipeline(net, deploy, weights, out, layers)
    log(f"train: {solver_iters} solver iterations")
    steps["train"] = retrain(out, solver, solver_iters)
    cut, verify = steps["cut"].result, steps["verify"].result
    file_mb = weights.stat().st_size / 2**20
    report = {
        "net": str(train_val),
        "images": images,
        "caffemodel_mb": round(file_mb, 1),
        "params_before": cut["params_before"],
        "params_after": cut["params_after"],
        "widths": cut["widths"],
        "steps": {name: timing(done) for name, done in steps.items()},
        "verify": {key: verify[key] for key in ("ok", "max_relative_diff", "max_abs_diff")},
        "cut_rss_over_caffemodel": round(steps["cut"].peak_rss_mb / file_mb, 2),
        "total_seconds": round(time.monotonic() - start, 1),
    }
    write_json(out / "report.json", report)
    return report
