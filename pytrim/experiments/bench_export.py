"""Benchmark: does every net leave Caffe? (runs/bench/export.json)

Every net `pytrim zoo` generates (the model-zoo nets at full size and pytrim's Fashion-MNIST
benchmark nets), with random non-degenerate weights (pytrim.experiments.synthetic: He-scaled
weights, BatchNorm statistics from a TRAIN pass), original and with a quarter of every
trimmable group cut: is it exported (`pytrim export`, verified in ONNX Runtime), its largest
relative difference to Caffe, OpenCV's difference reading the Caffe files (and what OpenCV does
not do as Caffe does), and the forward time of one image on one thread in each runtime against
Caffe's (the three timed interleaved).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytrim.caffeio import benchnets, zoo
from pytrim.caffeio.env import blas_config
from pytrim.caffeio.proto import read_net
from pytrim.core.errors import PytrimError
from pytrim.core.files import provenance
from pytrim.core.runner import run_child
from pytrim.experiments.bench_speed import cut_case
from pytrim.experiments.synthetic import Options, generate
from pytrim.export.build import translate
from pytrim.export.check import opencv_caveats, opencv_difference
from pytrim.export.runtimes import RUNTIMES, Refused, forwards
from pytrim.export.save import save_onnx
from pytrim.stats.cost import time_forward

NETS = (*zoo.NETS, *benchnets.NETS)


def deploy_of(name: str, folder: Path) -> Path:
    (deploy,) = (benchnets if name in benchnets.NETS else zoo).write(name, folder, ["deploy"])
    return deploy


def random_weights(deploy: Path, folder: Path) -> Path:
    """Weights a trained net could have, from a synthetic train_val of the deploy net."""
    folder.mkdir(parents=True, exist_ok=True)
    tv, _ = generate(deploy, folder, Options(images=4, batch=2))
    weights = folder / "random.caffemodel"
    code = f"from pytrim.experiments.synthetic import make_weights; make_weights({str(tv)!r}, {str(weights)!r})"
    run_child([sys.executable, "-c", code], folder / "weights.log", "random weights")
    return weights


def against_caffe(net: Path, weights: Path, repeats: int, tmp: Path) -> dict[str, Any]:
    """Seconds per image on one thread in each runtime, timed interleaved, and Caffe's time over
    each runtime's (> 1: faster than Caffe)."""
    built, times = [], {}
    for runtime in RUNTIMES:
        found = forwards(runtime, [(net, weights)], 1, 1, tmp / runtime)
        if isinstance(found, Refused):
            times[runtime] = {"refused": found.reason}
        else:
            built.append((runtime, found[0]))
    timed = time_forward([f for _, f in built], 1, repeats)
    for (runtime, _), seconds, ratio, wobble in zip(built, timed["seconds"], timed["speedup"], timed["spread"],
                                                     strict=True):  # fmt: skip
        times[runtime] = {"seconds": seconds, "caffe_over_this": ratio, "spread": wobble}
    return times


def one(net: Path, weights: Path, out: Path, repeats: int, tmp: Path) -> dict[str, Any]:
    """One net: exported? how close? OpenCV's difference, the times."""
    entry: dict[str, Any] = {}
    try:
        done = save_onnx(net, weights, out)
        entry |= {
            "exported": True,
            "max_relative_diff": done["max_relative_diff"],
            "worst": done["worst"],
            "end_to_end_max_relative_diff": done["end_to_end_max_relative_diff"],
        }
    except PytrimError as exc:
        return {"exported": False, "error": str(exc)}
    entry["opencv_caveats"] = opencv_caveats(read_net(net))
    try:
        entry["opencv_max_relative_diff"] = opencv_difference(net, weights, translate(net, weights))
    except Exception as exc:  # OpenCV's own error: it cannot build the net
        entry["opencv_error"] = str(exc).strip().splitlines()[-1][:300]
    for runtime in RUNTIMES:
        (tmp / runtime).mkdir(parents=True, exist_ok=True)
    entry["times"] = against_caffe(net, weights, repeats, tmp)
    return entry


def bench_export(names: list[str], repeats: int, out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every net, original and cut by a quarter; the ONNX files are kept under `out`'s folder."""
    results: dict[str, Any] = {}
    models = out.parent / "export"
    for name in names:
        with tempfile.TemporaryDirectory(prefix="pytrim-export-") as tmp:
            folder = Path(tmp)
            deploy = deploy_of(name, folder / "net")
            weights = random_weights(deploy, folder / "synthetic")
            (folder / "cut").mkdir()
            cut = cut_case(deploy, weights, 0.25, 1, folder / "cut")
            results[name] = {kind: one(net, w, models / f"{name}-{kind}.onnx", repeats, folder / kind)
                             for kind, (net, w) in (("original", (deploy, weights)), ("trimmed", cut))}  # fmt: skip
        log(line(name, results[name]))
    return {"nets": results, "summary": summary(results), "repeats": repeats, **blas_config(),
            "provenance": provenance()}  # fmt: skip


def line(name: str, result: dict[str, Any]) -> str:
    parts = []
    for kind, entry in result.items():
        if not entry["exported"]:
            parts.append(f"{kind}: NOT exported ({entry['error']})")
            continue
        times = ", ".join(f"{r} {t['caffe_over_this']:.2f}x" for r, t in entry["times"].items() if "seconds" in t)
        parts.append(f"{kind}: exported, {entry['max_relative_diff']:.2g} from Caffe; against Caffe: {times}")
    return f"{name}: " + "; ".join(parts)


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """How many exported, the largest difference, and the median speed of each runtime against Caffe."""
    entries = [e for result in results.values() for e in result.values()]
    exported = [e for e in entries if e["exported"]]
    worst = max((e["max_relative_diff"] for e in exported), default=None)
    found: dict[str, Any] = {"models": len(entries), "exported": len(exported), "max_relative_diff": worst}
    for runtime in RUNTIMES[1:]:
        ratios = [e["times"][runtime]["caffe_over_this"] for e in exported if "seconds" in e["times"].get(runtime, {})]
        found[f"{runtime}_median_caffe_over_this"] = statistics.median(ratios) if ratios else None
    return found
