"""Sweep pruning criteria on LeNet-5 and LeNet-300-100 (make lenet-compare): accuracy against
compression, every criterion at several points, several seeds per point.

Unit criteria (apoz, mean_activation, l1, taylor, random) cut a fraction of every trimmable
channel group physically (each cut verified); magnitude (Han et al., iterative, rising
threshold) and relief (NN Relief's rule, iterated; emptied neurons cut) mask connections.
Every point is retrained with the same budget. Statistics come from a seeded random sample of
--images training images, the validation split chooses checkpoints, the test set gives only
the reported numbers. Writes <out>/report.json (one entry per criterion, net, point and seed:
criterion, net, point, seed, params, nonzero, compression, top1, top1_before, verified, ...),
report.md and accuracy_vs_compression.png. Finished tasks are kept when the command is run
again. Baselines missing from models/ are trained first.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytrim.cli.options import add_workers, names, net_names, numbers, positive
from pytrim.core.files import shipped
from pytrim.criteria.scores import CONNECTION, UNIT
from pytrim.experiments.relief import NETS
from pytrim.experiments.sweep import run_comparison
from pytrim.experiments.sweep_report import markdown
from pytrim.experiments.sweep_tasks import Data, NetFiles, Settings, all_tasks

OUTPUTS = {"out": "folder"}
RESUMABLE = True


def net_files(name: str) -> NetFiles:
    folder, weights = NETS[name]
    p = shipped(Path("prototxt") / folder)
    return NetFiles(name, p / "train_val.prototxt", Path(weights), p / "solver.prototxt",
                    p / "finetune_solver.prototxt")  # fmt: skip


def arguments(p: argparse.ArgumentParser) -> None:
    d = Settings()
    p.add_argument("--nets", default="lenet5,lenet300", help="comma-separated: lenet5, lenet300")
    p.add_argument("--criteria", default=",".join(UNIT + CONNECTION), help="comma-separated criteria")
    p.add_argument("--unit-points", default=",".join(map(str, d.unit_points)), help="fractions cut (unit criteria)")
    p.add_argument("--magnitude-points", default=",".join(map(str, d.magnitude_points)), help="final quality x std")
    p.add_argument("--relief-points", default=",".join(map(str, d.relief_points)), help="alpha of the fc layers")
    p.add_argument("--seed", default=",".join(map(str, d.seeds)), help="seeds, one task per point and seed (0,1,2)")
    p.add_argument("--finetune-iters", type=positive, default=d.budget,
                   help=f"retraining iterations per point ({d.budget})")  # fmt: skip
    p.add_argument("--rounds", type=positive, default=d.rounds, help=f"rounds of the iterative criteria ({d.rounds})")
    p.add_argument("--images", type=positive, default=d.stats_images, help="training images sampled (1000)")
    p.add_argument("--select-every", type=positive, default=d.select_every, help="validation checks while retraining")
    p.add_argument("--data-dir", type=Path, default=Path("data/lenet"), help="train/val/test LMDBs (data/lenet)")
    p.add_argument("--out", type=Path, default=Path("runs/lenet-compare"))
    add_workers(p)


def settings_of(args: argparse.Namespace) -> Settings:
    seeds = numbers(args.seed, int, "--seed")
    points = [numbers(getattr(args, f"{kind}_points"), float, f"--{kind}-points")
              for kind in ("unit", "magnitude", "relief")]  # fmt: skip
    return Settings(*points, seeds, args.finetune_iters, args.rounds, args.images, args.select_every)


def execute(args: argparse.Namespace) -> dict[str, Any]:
    settings = settings_of(args)
    nets = {n: net_files(n) for n in net_names(args.nets, NETS)}
    d = args.data_dir
    data = Data(d / "train_lmdb", d / "val_lmdb", d / "test_lmdb")
    tasks = all_tasks(list(nets), names(args.criteria) or [], settings)
    say = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    report = run_comparison(nets, data, tasks, settings, args.out, args.workers, args.ray_address, say)
    print(markdown(report))
    return report
