"""Network Trimming, iterated: baseline -> (collect -> select -> cut -> verify -> retrain) x N.

The schedule file (TOML) names the net, weights, solvers, the layers each iteration trims
and the rule, the fine-tuning budget and when to stop. Each iteration's files go to
<out>/iter-NN/; <out>/state.json records finished steps with a key of their inputs and
settings, so running the same command again after a crash or Ctrl-C resumes at the first
unfinished step, and a step whose inputs or settings changed is computed again. --restart
starts over (only in a folder pytrim created). Writes <out>/report.md and report.json.
"""

from __future__ import annotations

from pathlib import Path

from pytrim.cli import add_common, add_workers, finish, parser
from pytrim.files import check_outputs, remove_run_folder
from pytrim.loop import run_schedule
from pytrim.report import markdown, write
from pytrim.schedule import load_schedule


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--schedule", type=Path, required=True, help="schedule TOML (e.g. prototxt/lenet/trim.toml)")
    p.add_argument("--out", type=Path, help="output folder (default: the schedule's `out`)")
    p.add_argument("--weights", type=Path, help="trim this caffemodel instead of the schedule's weights")
    p.add_argument("--iterations", type=int, help="number of trimming iterations")
    p.add_argument("--criterion", help="unit criterion: apoz (default), mean_activation, l1, taylor, random")
    p.add_argument("--finetune-iters", type=int, help="solver iterations of each retraining")
    p.add_argument("--finetune-lr", type=float, help="base_lr of each retraining (default: the solver's)")
    p.add_argument("--scratch-iters", type=int, help="solver iterations of the from-scratch ablation")
    p.add_argument("--stats-limit", type=int, help="images used for the statistics (default: all)")
    p.add_argument("--tolerance", type=float, help="stop when top-1 falls this many points below the baseline")
    p.add_argument("--no-scratch", action="store_true", help="skip the from-scratch ablation")
    p.add_argument("--allow-inexact", action="store_true", help="cut through LRN across channels (deviation reported)")
    p.add_argument("--fold-mean", action="store_true", help="fold removed channels' means into consumers' biases")
    p.add_argument("--restart", action="store_true", help="remove the output folder (a pytrim run) and start over")
    add_workers(p)
    add_common(p)
    args = p.parse_args(argv)
    overrides = {
        "out": str(args.out) if args.out else None,
        "weights": str(args.weights) if args.weights else None,
        "train_missing_weights": False if args.weights else None,
        "iterations": args.iterations,
        "finetune_iters": args.finetune_iters,
        "finetune_lr": args.finetune_lr,
        "criterion": args.criterion,
        "scratch_iters": args.scratch_iters,
        "stats_limit": args.stats_limit,
        "tolerance": args.tolerance,
        "scratch": False if args.no_scratch else None,
        "allow_inexact": True if args.allow_inexact else None,
        "fold_mean": True if args.fold_mean else None,
    }
    schedule = load_schedule(args.schedule, **overrides)
    inputs = {f"schedule's {k}": v for k, v in schedule.inputs().items()} | {"--schedule": args.schedule}
    check_outputs(
        inputs | {"baseline_solver": schedule.baseline_solver, "finetune_solver": schedule.finetune_solver},
        {"the output folder": schedule.out},
    )
    if args.restart:
        remove_run_folder(schedule.out)
    sharding = [f"--workers={args.workers}"] if args.workers else []
    sharding += [f"--ray-address={args.ray_address}"] if args.ray_address else []
    state = run_schedule(schedule, progress=not args.quiet, sharding=sharding)
    title = f"Network Trimming: {schedule.name}"
    report = write(state, schedule.out, title, val=schedule.val_data is not None)
    finish(args, report)
    print()
    print(markdown(report, title))
    print(f"written: {schedule.out / 'report.md'}, {schedule.out / 'report.json'}")
    return 0
