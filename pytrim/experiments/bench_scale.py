"""Benchmarks of scale-out (runs/bench/scale.json): APoZ statistics of the same TEST images in
one process and on 1 and 2 Ray workers, and a small criteria sweep on 1 and 2 workers.

Every run is pinned to one BLAS thread (the in-process one too, so the comparison is of
processes, not of OpenBLAS's threads). Pass timings are medians of `repeats` runs inside an
already started Ray (the steady state: a cluster that is up); the start of a local Ray and
its workers is timed on its own. Counts must be identical everywhere.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pytrim.core.files import read_json
from pytrim.scale.cluster import SINGLE_THREAD, session
from pytrim.stats.collect import collect
from pytrim.stats.statsfile import load_stats

SWEEP = ["--nets", "lenet300,lenet5", "--criteria", "apoz,l1,magnitude,relief", "--seed", "0", "--unit-points",
         "0.5", "--magnitude-points", "1.0", "--relief-points", "0.95", "--finetune-iters", "300"]  # fmt: skip


def in_process(net: Path, weights: Path, images: int | None, repeats: int, out: Path) -> tuple[float, dict]:
    """The median `seconds` of `pytrim collect` in a child with one BLAS thread, and its zeros."""
    times = []
    for _ in range(repeats):
        args = ["collect", "--net", str(net), "--weights", str(weights), "--out", str(out / "one.h5"), "--quiet"]
        args += ["--images", str(images)] if images else []
        subprocess.run([sys.executable, "-m", "pytrim", *args, "--result", str(out / "one.json")],
                       env={**os.environ, **SINGLE_THREAD}, check=True, capture_output=True)  # fmt: skip
        times.append(read_json(out / "one.json", "collect result")["seconds"])
    return statistics.median(times), zeros_of(load_stats(out / "one.h5"))


def zeros_of(stats: Any) -> dict[str, list[int]]:
    return {name: layer.zeros.tolist() for name, layer in stats.layers.items()}


def on_ray(net: Path, weights: Path, images: int | None, workers: int, repeats: int) -> dict[str, Any]:
    """Start a local Ray with `workers` slots, warm its workers, then time `repeats` passes."""
    start = time.monotonic()
    with session(workers, None):
        collect(net, weights, images=images, progress=False, workers=workers)  # starts and warms the workers
        startup = time.monotonic() - start
        times, stats = [], None
        for _ in range(repeats):
            stats = collect(net, weights, images=images, progress=False, workers=workers)
            times.append(stats.seconds)
    images = next(iter(stats.layers.values())).images
    return {"seconds": statistics.median(times), "first_run_seconds": round(startup, 2), "zeros": zeros_of(stats),
            "images": images}  # fmt: skip


def sweep_seconds(workers: int, out: Path, args: list[str]) -> float:
    """Wall-clock of `sweep-criteria` on `workers` Ray workers, from an empty folder."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "pytrim", "sweep-criteria", *args, "--out", str(out), "--workers",
                    str(workers), "--quiet"], check=True, capture_output=True)  # fmt: skip
    return time.monotonic() - start


def scaling(net: Path, weights: Path, images: int | None, repeats: int, sweep: list[str] | None) -> dict[str, Any]:
    """The numbers of runs/bench/scale.json."""
    with tempfile.TemporaryDirectory(prefix="pytrim-scale-") as tmp:
        alone, zeros = in_process(net, weights, images, repeats, Path(tmp))
    one, two = (on_ray(net, weights, images, n, repeats) for n in (1, 2))
    result = {
        "images": two["images"],
        "in_process_seconds": round(alone, 3),
        "ray_1_worker_seconds": round(one["seconds"], 3),
        "ray_2_workers_seconds": round(two["seconds"], 3),
        "speedup_2_workers": round(one["seconds"] / two["seconds"], 3),
        "ray_overhead_1_worker": round(one["seconds"] / alone - 1, 3),
        "ray_start_and_first_run_seconds": {"1": one["first_run_seconds"], "2": two["first_run_seconds"]},
        "identical_counts": zeros == one["zeros"] == two["zeros"],
        "repeats": repeats,
    }
    if sweep is not None:
        folder = Path("runs/bench/sweep")
        w1, w2 = sweep_seconds(1, folder / "w1", sweep), sweep_seconds(2, folder / "w2", sweep)
        result["sweep_args"] = sweep
        result["sweep_1_worker_seconds"], result["sweep_2_workers_seconds"] = round(w1, 1), round(w2, 1)
        result["sweep_speedup_2_workers"] = round(w1 / w2, 3)
    return result
