"""NN Relief on LeNet-300-100 and LeNet-5, iterated as its authors run it (make lenet-relief).

Per round: scores on a fixed random sample of --images training images, the authors'
per-neuron rule (alpha of each neuron's importance kept, the bias ranked among its
connections), dead and orphaned neurons removed, then retraining with the masks held at zero
(Adam, lr 1e-3, weight decay 5e-4) keeping the checkpoint with the best validation accuracy.
Writes <out>/<net>/report.json per net and <out>/report.json: per net `baseline` {params,
top1} and `rounds` [{round, nonzero, compression, top1, top1_before, val_top1}]; top-1 is on
the test set, which no decision sees. Baselines missing from models/ are trained first.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytrim.caffeio.env import pinned_machine
from pytrim.cli.options import finite, net_names, positive
from pytrim.core.files import write_json
from pytrim.experiments.relief import NETS, ReliefSettings, lenet, run_relief

OUTPUTS = {"out": "folder"}
RESUMABLE = True


def arguments(p: argparse.ArgumentParser) -> None:
    d = ReliefSettings()
    p.add_argument("--nets", default="lenet300,lenet5", help="comma-separated: lenet300, lenet5")
    p.add_argument("--rounds", type=positive, default=d.rounds, help=f"pruning rounds ({d.rounds})")
    p.add_argument(
        "--finetune-iters",
        type=positive,
        default=d.retrain_iters,
        help=f"solver iterations of retraining per round ({d.retrain_iters}; the authors: 60 epochs)",
    )
    p.add_argument("--select-every", type=positive, default=d.select_every, help="validation checks while retraining")
    p.add_argument("--alpha-conv", type=finite, default=d.alpha_conv)
    p.add_argument("--alpha-fc", type=finite, default=d.alpha_fc)
    p.add_argument("--images", type=positive, default=d.sample, help="training images scored on (1000)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--rewind", action="store_true", help="rewind the surviving weights to their initial values")
    p.add_argument("--data-dir", type=Path, default=Path("data/lenet"), help="train/val/test LMDBs (data/lenet)")
    p.add_argument("--out", type=Path, default=Path("runs/lenet-relief"))


def execute(args: argparse.Namespace) -> dict[str, Any]:
    settings = ReliefSettings(args.alpha_conv, args.alpha_fc, args.rounds, args.images, args.seed,
                              args.finetune_iters, args.select_every, rewind=args.rewind)  # fmt: skip
    report = {}
    for name in net_names(args.nets, NETS):
        result = run_relief(lenet(name, args.data_dir), settings, args.out / name)
        report[name] = {"baseline": result["baseline"], "rounds": result["rounds"], "settings": result["settings"],
                        "machine": pinned_machine()}  # fmt: skip
        write_json(args.out / "report.json", report)
    return report
