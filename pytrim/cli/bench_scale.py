"""Benchmark: scale-out on Ray (runs/bench/scale.json). APoZ statistics of the LeNet test
images in one process and on 1 and 2 local Ray workers (one BLAS thread each; counts must be
identical), and a small criteria sweep (sweep-criteria) on 1 and 2 workers. Prints and writes
speedup_2_workers, ray_overhead_1_worker and sweep_speedup_2_workers.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytrim.cli.options import positive
from pytrim.core.errors import StepFailed
from pytrim.core.files import write_json
from pytrim.experiments.bench_scale import SWEEP, scaling

OUTPUTS = {"out": "file"}


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--net", type=Path, default=Path("prototxt/lenet/train_val.prototxt"), help="train_val prototxt")
    p.add_argument("--weights", type=Path, default=Path("models/lenet/lenet.caffemodel"), help="caffemodel")
    p.add_argument("--images", type=positive, help="only the first N TEST images (default: all, 10,000 for LeNet)")
    p.add_argument("--repeats", type=positive, default=3, help="timed passes per setting (the median is kept)")
    p.add_argument("--sweep-args", default=" ".join(SWEEP), help="sweep-criteria options of the timed sweep")
    p.add_argument("--no-sweep", action="store_true", help="time only the statistics")
    p.add_argument("--out", type=Path, default=Path("runs/bench/scale.json"))


def execute(args: argparse.Namespace) -> dict[str, Any]:
    result = scaling(args.net, args.weights, args.images, args.repeats,
                     None if args.no_sweep else args.sweep_args.split())  # fmt: skip
    write_json(args.out, result)
    print(f"APoZ over {result['images']} images: in process {result['in_process_seconds']} s, 1 Ray worker "
          f"{result['ray_1_worker_seconds']} s, 2 workers {result['ray_2_workers_seconds']} s: speedup "
          f"{result['speedup_2_workers']}, overhead of Ray with 1 worker {result['ray_overhead_1_worker']:+.1%}, "
          f"identical counts: {result['identical_counts']}")  # fmt: skip
    if "sweep_speedup_2_workers" in result:
        print(f"sweep: 1 worker {result['sweep_1_worker_seconds']} s, 2 workers {result['sweep_2_workers_seconds']} s,"
              f" speedup {result['sweep_speedup_2_workers']}")  # fmt: skip
    print(args.out)
    if not result["identical_counts"]:
        raise StepFailed("the sharded zero counts differ from the single-process ones")
    return result
