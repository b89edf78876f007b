"""Benchmarks of scale-out (runs/bench/scale.json): APoZ statistics of the same TEST images in
one process and on 1 and 2 Ray workers, and a small criteria sweep on 1 and 2 workers.

Like is compared with like: the timed pass is the same in every setting, the one a Ray worker
runs (pytrim.scale.shards: the measuring net built from its text, the LMDB records fed by
pytrim's reader, zeros counted), run once in this process and as 1 or 2 shards on Ray.
Every run has one BLAS thread and the same kernels (pytrim.scale.cluster.worker_env; the
single process is started with it).
Times are medians of `repeats` passes; the start of a local Ray and its first pass are timed
on their own. Counts must be identical everywhere.
"""

from __future__ import annotations

import multiprocessing
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from pytrim.caffeio.env import blas_config, load_caffe
from pytrim.caffeio.proto import read_net
from pytrim.core.files import provenance
from pytrim.feeds.source import data_source
from pytrim.scale.cluster import run_remote, session, single_threaded
from pytrim.scale.shards import ShardJob, merge, run_shard, shard_jobs
from pytrim.stats.collect import apoz_pass, prepare

SWEEP = ["--nets", "lenet300,lenet5", "--criteria", "apoz,l1,magnitude,relief", "--seed", "0", "--unit-points",
         "0.5", "--magnitude-points", "1.0", "--relief-points", "0.95", "--finetune-iters", "300"]  # fmt: skip

Jobs = Callable[[int], list[ShardJob]]


def pass_jobs(net: Path, weights: Path, images: int | None, tmp: Path) -> Jobs:
    """collect's APoZ pass over `net`'s TEST images as shard jobs (the measuring net once)."""
    data = data_source(read_net(net), images, None)
    run_path, _groups, plan, folded = prepare(net, None, tmp, False)
    blobs = list(dict.fromkeys(p.blob for points in plan.values() for p in points))
    return shard_jobs(apoz_pass, run_path, weights, data, {"blobs": blobs, "folded": folded})


def timed(work: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The median seconds of `repeats` runs of `work`, and its last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.monotonic()
        result = work()
        times.append(time.monotonic() - start)
    return statistics.median(times), result


def timed_shard(job: ShardJob, repeats: int) -> dict[str, Any]:
    """The median seconds of `repeats` runs of one shard job in this process, and its zeros."""
    load_caffe()
    seconds, result = timed(lambda: run_shard(job), repeats)
    zeros = {blob: z.tolist() for blob, z in result["zeros"].items()}
    return {"seconds": seconds, "zeros": zeros, **blas_config()}


def in_process(jobs: Jobs, repeats: int) -> dict[str, Any]:
    """The pass as one shard in one plain process (no Ray), started with the workers'
    environment (one BLAS thread, the same kernels)."""
    with single_threaded(), ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(timed_shard, jobs(1)[0], repeats).result()


def on_ray(jobs: Jobs, workers: int, repeats: int) -> dict[str, Any]:
    """Start a local Ray with `workers` slots and run the pass once (timed together: the
    start-up), then time `repeats` passes split among the workers."""
    start = time.monotonic()
    with session(workers, None) as s:
        shards = jobs(s.slots)

        def run() -> dict[str, Any]:
            return merge(run_remote(s, run_shard, shards, "APoZ", lambda job: job.label))

        run()
        startup = time.monotonic() - start
        seconds, merged = timed(run, repeats)
    zeros = {blob: z.tolist() for blob, z in merged["zeros"].items()}
    return {"seconds": seconds, "first_run_seconds": round(startup, 2), "zeros": zeros, "images": merged["images"]}


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
        jobs = pass_jobs(net, weights, images, Path(tmp))
        alone = in_process(jobs, repeats)
        one, two = (on_ray(jobs, n, repeats) for n in (1, 2))
    result = {
        "images": two["images"],
        "pass": "the same shard pass everywhere (Input net, pytrim's LMDB reader, zero counting)",
        "in_process_seconds": round(alone["seconds"], 3),
        "in_process_blas": {"threads": alone["blas_threads"], "core": alone["blas_core"]},
        "ray_1_worker_seconds": round(one["seconds"], 3),
        "ray_2_workers_seconds": round(two["seconds"], 3),
        "speedup_2_workers": round(one["seconds"] / two["seconds"], 3),
        "ray_overhead_1_worker": round(one["seconds"] / alone["seconds"] - 1, 3),
        "ray_start_and_first_run_seconds": {"1": one["first_run_seconds"], "2": two["first_run_seconds"]},
        "identical_counts": alone["zeros"] == one["zeros"] == two["zeros"],
        "repeats": repeats,
        "provenance": provenance(),
    }
    if sweep is not None:
        folder = Path("runs/bench/sweep")
        w1, w2 = sweep_seconds(1, folder / "w1", sweep), sweep_seconds(2, folder / "w2", sweep)
        result["sweep_args"] = sweep
        result["sweep_1_worker_seconds"], result["sweep_2_workers_seconds"] = round(w1, 1), round(w2, 1)
        result["sweep_speedup_2_workers"] = round(w1 / w2, 3)
    return result
