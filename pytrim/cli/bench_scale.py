"""Benchmark: scale-out on Ray (runs/bench/scale.json). APoZ statistics of the LeNet test
images in one process and on 1 and 2 local Ray workers (one BLAS thread each; counts must be
identical), and a small criteria sweep (compare-criteria) on 1 and 2 workers. Prints and
writes speedup_2_workers, ray_overhead_1_worker and sweep_speedup_2_workers.
"""

from __future__ import annotations

from pathlib import Path

from pytrim.cli import add_common, finish, parser
from pytrim.files import write_json
from pytrim.scaling import SWEEP, check_identical, scaling


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--net", type=Path, default=Path("prototxt/lenet/train_val.prototxt"), help="train_val prototxt")
    p.add_argument("--weights", type=Path, default=Path("models/lenet/lenet.caffemodel"), help="caffemodel")
    p.add_argument("--limit", type=int, help="only the first N TEST images (default: all, 10,000 for LeNet)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per setting (the median is kept)")
    p.add_argument("--sweep-args", default=" ".join(SWEEP), help="compare-criteria options of the timed sweep")
    p.add_argument("--no-sweep", action="store_true", help="time only the statistics")
    p.add_argument("--out", type=Path, default=Path("runs/bench/scale.json"))
    add_common(p)
    args = p.parse_args(argv)
    result = scaling(
        args.net, args.weights, args.limit, args.repeats, None if args.no_sweep else args.sweep_args.split()
    )
    write_json(args.out, result)
    finish(args, result)
    print(f"APoZ over {result['images']} images: in process {result['in_process_seconds']} s, 1 Ray worker "
          f"{result['ray_1_worker_seconds']} s, 2 workers {result['ray_2_workers_seconds']} s: speedup "
          f"{result['speedup_2_workers']}, overhead of Ray with 1 worker {result['ray_overhead_1_worker']:+.1%}, "
          f"identical counts: {result['identical_counts']}")  # fmt: skip
    if "sweep_speedup_2_workers" in result:
        print(f"sweep: 1 worker {result['sweep_1_worker_seconds']} s, 2 workers {result['sweep_2_workers_seconds']} s,"
              f" speedup {result['sweep_speedup_2_workers']}")  # fmt: skip
    print(args.out)
    check_identical(result)
    return 0
