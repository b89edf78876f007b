"""The whole machinery on a full-size net with filler weights and generated images.

Used for VGG-16 (138,357,544 parameters, 224x224 input) where the published weights and
ImageNet cannot be downloaded: the same tools as a real run (collect, choose, cut, verify,
a few solver iterations), each in a child process whose wall time and peak resident memory
(from os.wait4) are recorded in report.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import text_format

from pytrim.caffe_env import caffe_pb2
from pytrim.datasets import write_lmdb
from pytrim.protoutil import read_net, set_data_sources, write_text
from pytrim.train import read_solver

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def timed(args: list[str], log: Path) -> dict[str, Any]:
    """Run a command; return its seconds and peak RSS (MB, the command and its reaped children)."""
    start = time.monotonic()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with log.open("w") as out:
        child = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - start
    if child.returncode != 0:
        tail = "\n  ".join(log.read_text().strip().splitlines()[-8:])
        raise RuntimeError(f"{' '.join(Path(a).name for a in args[:2])} failed (log {log}):\n  {tail}")
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def synthetic_net(train_val: Path, out: Path, train_db: Path, test_db: Path, batch: int) -> Path:
    """A copy of train_val reading the generated LMDBs, with a small batch."""
    return write_text(set_data_sources(read_net(train_val), train_db, test_db, batch=batch), out)


def make_weights(net: Path, out: Path) -> None:
    """Filler weights: the prototxt's own fillers (gaussian), saved as a caffemodel."""
    from pytrim.caffe_env import load_caffe

    caffe = load_caffe()
    caffe.set_random_seed(1701)
    caffe.Net(str(net), caffe.TEST).save(str(out))


def run(
    train_val: Path,
    deploy: Path,
    out: Path,
    layers: list[str],
    images: int = 8,
    batch: int = 4,
    solver_iters: int = 2,
    solver: Path | None = None,
    log=print,
) -> dict[str, Any]:
    """Generate data and weights, then collect -> choose -> cut -> verify -> train, timed."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    steps: dict[str, Any] = {}
    py = sys.executable
    start = time.monotonic()
    size = read_net(train_val)
    crop = next(layer.transform_param.crop_size for layer in size.layer if layer.type == "Data") or 224
    side = max(256, crop)
    data = rng.integers(0, 256, (images, 3, side, side), dtype=np.uint8)
    labels = rng.integers(0, 1000, images).astype(np.int64)
    write_lmdb(data, labels, out / "train_lmdb", progress=False)
    write_lmdb(data, labels, out / "val_lmdb", progress=False)
    steps["data"] = {"seconds": round(time.monotonic() - start, 2), "images": images}
    net = synthetic_net(train_val, out / "train_val.prototxt", out / "train_lmdb", out / "val_lmdb", batch)
    weights = out / "filler.caffemodel"
    log(f"filler weights -> {weights}")
    steps["weights"] = timed(
        [py, "-c", f"from pytrim.synthetic import make_weights; make_weights({str(net)!r}, {str(weights)!r})"],
        out / "weights.log",
    )
    file_mb = weights.stat().st_size / 2**20
    log(f"collect: {images} images")
    steps["collect"] = timed(
        [
            py,
            str(TOOLS / "collect.py"),
            "--net",
            str(net),
            "--weights",
            str(weights),
            "--out",
            str(out / "stats.h5"),
            "--plots",
            str(out),
            "--quiet",
        ],
        out / "collect.log",
    )
    steps["choose"] = timed(
        [
            py,
            str(TOOLS / "choose.py"),
            "--stats",
            str(out / "stats.h5"),
            "--layers",
            ",".join(layers),
            "--weights",
            str(weights),
            "--out",
            str(out / "selection.json"),
        ],
        out / "choose.log",
    )
    log("cut")
    steps["cut"] = timed(
        [
            py,
            str(TOOLS / "cut.py"),
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
        out / "cut.log",
    )
    log("verify")
    steps["verify"] = timed(
        [
            py,
            str(TOOLS / "verify.py"),
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
            "--json",
        ],
        out / "verify.log",
    )
    verify = json.loads((out / "verify.log").read_text()[(out / "verify.log").read_text().index("{") :])
    steps["verify"].update(
        max_abs_diff=verify["max_abs_diff"], max_relative_diff=verify["max_relative_diff"], ok=verify["ok"]
    )
    solver_file = out / "solver.prototxt"
    solver_param = read_solver(solver) if solver else caffe_pb2().SolverParameter()
    solver_param.net = str(out / "cut/train_val.prototxt")
    solver_param.base_lr = solver_param.base_lr or 0.001
    solver_param.lr_policy = solver_param.lr_policy or "fixed"
    solver_param.max_iter = solver_iters
    solver_param.display = 1
    solver_param.solver_mode = solver_param.CPU
    solver_param.ClearField("test_iter")
    solver_param.ClearField("test_interval")
    solver_param.test_initialization = False
    solver_file.write_text(text_format.MessageToString(solver_param))
    log(f"train: {solver_iters} solver iterations")
    steps["train"] = timed(
        [
            py,
            str(TOOLS / "train.py"),
            "--solver",
            str(solver_file),
            "--weights",
            str(out / "cut/trimmed.caffemodel"),
            "--out",
            str(out / "cut/retrained.caffemodel"),
            "--no-eval",
            "--quiet",
        ],
        out / "train.log",
    )
    selection = json.loads((out / "selection.json").read_text())
    cut_log = (out / "cut.log").read_text()
    params = [int(x.replace(",", "")) for x in cut_log.split("parameters ")[1].split(" (")[0].split(" -> ")]
    report = {
        "net": str(train_val),
        "images": images,
        "caffemodel_mb": round(file_mb, 1),
        "params_before": params[0],
        "params_after": params[1],
        "widths": {e["layer"]: [e["width"], e["kept"]] for e in selection["layers"]},
        "steps": steps,
        "cut_rss_over_caffemodel": round(steps["cut"]["peak_rss_mb"] / file_mb, 2),
        "total_seconds": round(time.monotonic() - start, 1),
    }
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report
