"""Network Trimming, iterated: baseline -> (collect -> select -> cut -> verify -> retrain) x N.

The schedule file (TOML) names the net, weights, solvers, the layers each iteration trims
and the rule, the fine-tuning budget and when to stop. Each iteration's files go to
<out>/iter-NN/; <out>/state.json records finished steps with a key of their inputs and
settings, so running the same command again after a crash or Ctrl-C resumes at the first
unfinished step, and a step whose inputs or settings changed is computed again. --restart
starts over (only in a folder pytrim created). Writes <out>/report.md and report.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytrim.cli.options import add_workers, finite, positive
from pytrim.core.files import clear_run_folder
from pytrim.criteria.scores import UNIT
from pytrim.loop.driver import prepare, run_schedule
from pytrim.loop.report import markdown, write
from pytrim.loop.schedule import Schedule, load_schedule
from pytrim.scale.cluster import shared_local

OUTPUTS = {"out": "place"}  # the run folder is `outputs` (the schedule's, or --out)
RESUMABLE = True


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--schedule", type=Path, required=True, help="schedule TOML (e.g. prototxt/lenet/trim.toml)")
    p.add_argument("--out", type=Path, help="output folder (default: the schedule's `out`)")
    p.add_argument("--weights", type=Path, help="trim this caffemodel instead of the schedule's weights")
    p.add_argument("--iterations", type=int, help="number of trimming iterations")
    p.add_argument("--layers", help="comma-separated layers to trim every iteration, or auto (the paper's plan)")
    p.add_argument("--criterion", choices=UNIT, help="unit criterion (default: the schedule's, apoz)")
    p.add_argument("--finetune-iters", type=int, help="solver iterations of each retraining")
    p.add_argument("--finetune-lr", type=finite, help="base_lr of each retraining (default: the solver's)")
    p.add_argument("--scratch-iters", type=positive, help="solver iterations of the from-scratch ablation")
    p.add_argument("--images", type=positive, help="images used for the statistics (default: all)")
    p.add_argument("--round-to", type=positive, help="round kept widths to a multiple of N")
    p.add_argument("--tolerance", type=finite, help="points of the metric below the baseline the result may lose")
    p.add_argument("--metric", help="the TEST output blob decisions read (default: accuracy)")
    p.add_argument("--lower-is-better", action="store_true", help="--metric: lower values are better (a loss)")
    p.add_argument("--no-scratch", action="store_true", help="skip the from-scratch ablation")
    p.add_argument("--allow-inexact", action="store_true", help="cut through LRN across channels (deviation bounded)")
    p.add_argument("--fold-mean", action="store_true", help="fold removed channels' means into consumers' biases")
    p.add_argument("--restart", action="store_true", help="remove the output folder (a pytrim run) and start over")
    p.add_argument("--jobs", type=positive, help="steps run side by side at most (default: the cores; 1: serially)")
    p.add_argument("--retime", action="store_true", help="time every try again (the machine was busy); reuse the rest")
    add_workers(p)


def schedule_of(args: argparse.Namespace) -> Schedule:
    """The schedule with the command line's overrides (read once per run)."""
    if getattr(args, "loaded", None) is None:
        layers = None if args.layers is None else "auto" if args.layers == "auto" else args.layers.split(",")
        overrides = {
            "out": str(args.out) if args.out else None,
            "weights": str(args.weights) if args.weights else None,
            "train_missing_weights": False if args.weights else None,
            "iterations": args.iterations, "layers": layers, "criterion": args.criterion,
            "finetune_iters": args.finetune_iters, "finetune_lr": args.finetune_lr,
            "scratch_iters": args.scratch_iters, "stats_images": args.images, "round_to": args.round_to,
            "tolerance": args.tolerance, "metric": args.metric,
            "lower_is_better": True if args.lower_is_better else None,
            "scratch": False if args.no_scratch else None,
            "allow_inexact": True if args.allow_inexact else None,
            "fold_mean": True if args.fold_mean else None,
        }  # fmt: skip
        args.loaded = load_schedule(args.schedule, **overrides)
    return args.loaded  # type: ignore[no-any-return]


def check(args: argparse.Namespace) -> None:
    """Every value of the schedule, against its net, before any output is claimed."""
    prepare(schedule_of(args))


def inputs(args: argparse.Namespace) -> dict[str, Path | None]:
    return {f"the schedule's {key}": path for key, path in schedule_of(args).inputs().items()}


def outputs(args: argparse.Namespace) -> tuple[dict, dict]:
    return {}, {"the output folder": schedule_of(args).out}


def execute(args: argparse.Namespace) -> dict[str, Any]:
    schedule = schedule_of(args)
    if args.restart:
        clear_run_folder(schedule.out)
    with shared_local(args.workers if not args.ray_address else None) as local:
        address = args.ray_address or local
        sharding = [f"--ray-address={address}"] if address else []
        state = run_schedule(schedule, progress=not args.quiet, sharding=sharding, jobs=args.jobs, retime=args.retime)
    title = f"Network Trimming: {schedule.name}"
    report = write(state, schedule, title)
    print()
    print(markdown(report, title))
    print(f"written: {schedule.out / 'report.md'}, {schedule.out / 'report.json'}")
    return report
