"""Compare pruning criteria on LeNet-5 and LeNet-300-100 (make lenet-compare): accuracy
against compression, every criterion at several points, three seeds per point.

Unit criteria (apoz, mean_activation, l1, taylor, random) cut a fraction of every trimmable
channel group physically (each cut verified); magnitude (Han et al., iterative, rising
threshold) and relief (NN Relief's rule, iterated; emptied neurons cut) mask connections.
Every point is retrained with the same budget. Statistics come from training images, the
validation split chooses checkpoints, the test set gives only the reported numbers. Writes
<out>/report.json (one entry per criterion, net, point and seed: criterion, net, point, seed,
params, nonzero, compression, top1, top1_before, verified, ...), report.md and
accuracy_vs_compression.png. Finished tasks are kept when the command is run again.
Baselines missing from models/ are trained first.
"""

from __future__ import annotations

from pathlib import Path

from pytrim.cli import add_common, add_workers, finish, names, parser
from pytrim.compare import Data, NetFiles, Settings, all_tasks, markdown, run_comparison
from pytrim.criteria import CONNECTION, UNIT
from pytrim.errors import BadInput
from pytrim.files import shipped


def net_files(name: str, folder: str, weights: str) -> NetFiles:
    p = shipped(Path("prototxt") / folder)
    return NetFiles(
        name, p / "train_val.prototxt", Path(weights), p / "solver.prototxt", p / "finetune_solver.prototxt"
    )


NETS = {  # name -> (folder under prototxt/, baseline caffemodel); also NN Relief's nets
    "lenet5": ("lenet", "models/lenet/lenet.caffemodel"),
    "lenet300": ("lenet300", "models/lenet300/lenet300.caffemodel"),
}


def floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise BadInput(f"expected comma-separated numbers, not {text!r}") from None


def settings_of(args) -> Settings:
    seeds = tuple(int(s) for s in floats(args.seeds))
    return Settings(floats(args.unit_points), floats(args.magnitude_points), floats(args.relief_points), seeds,
                    args.budget, args.rounds, args.stats_images, args.select_every)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    d = Settings()
    p = parser(__doc__)
    p.add_argument("--nets", default="lenet5,lenet300", help="comma-separated: lenet5, lenet300")
    p.add_argument("--criteria", default=",".join(UNIT + CONNECTION), help="comma-separated criteria")
    p.add_argument("--unit-points", default=",".join(map(str, d.unit_points)), help="fractions cut (unit criteria)")
    p.add_argument("--magnitude-points", default=",".join(map(str, d.magnitude_points)), help="final quality x std")
    p.add_argument("--relief-points", default=",".join(map(str, d.relief_points)), help="alpha of the fc layers")
    p.add_argument("--seeds", default=",".join(map(str, d.seeds)), help="seeds per point (0,1,2)")
    p.add_argument("--budget", type=int, default=d.budget, help=f"retraining iterations per point ({d.budget})")
    p.add_argument("--rounds", type=int, default=d.rounds, help=f"rounds of the iterative criteria ({d.rounds})")
    p.add_argument("--stats-images", type=int, default=d.stats_images, help="training images sampled (1000)")
    p.add_argument("--select-every", type=int, default=d.select_every, help="validation checks while retraining")
    p.add_argument("--data", type=Path, default=Path("data/lenet"), help="train/val/test LMDBs (data/lenet)")
    p.add_argument("--out", type=Path, default=Path("runs/lenet-compare"))
    add_workers(p)
    add_common(p)
    args = p.parse_args(argv)
    settings = settings_of(args)
    unknown = [n for n in names(args.nets) or [] if n not in NETS]
    if unknown:
        raise BadInput(f"unknown net {unknown[0]!r} (lenet5 or lenet300)")
    nets = {n: net_files(n, *NETS[n]) for n in names(args.nets) or []}
    data = Data(args.data / "train_lmdb", args.data / "val_lmdb", args.data / "test_lmdb")
    tasks = all_tasks(list(nets), names(args.criteria) or [], settings)
    say = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    report = run_comparison(nets, data, tasks, settings, args.out, args.workers, args.ray_address, say)
    finish(args, report)
    print(markdown(report))
    return 0
