#!/usr/bin/env python3
"""Network Trimming, iterated: baseline -> (collect -> select -> cut -> verify -> retrain) x N.

The schedule file (TOML) names the net, weights, solvers, the layers each iteration trims
and the rule, the fine-tuning budget and when to stop. Each iteration's files go to
<out>/iter-NN/; <out>/state.json records finished steps, so running the same command again
after a crash or Ctrl-C resumes at the first unfinished step (--restart starts over).
Writes <out>/report.md and <out>/report.json.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from pytrim.cli import run
from pytrim.loop import Loop, load_schedule
from pytrim.report import markdown, write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schedule", type=Path, required=True, help="schedule TOML (e.g. prototxt/lenet/trim.toml)")
    parser.add_argument("--out", type=Path, help="output folder (default: the schedule's `out`)")
    parser.add_argument("--iterations", type=int, help="number of trimming iterations")
    parser.add_argument("--criterion", help="unit criterion: apoz (default), mean_activation, l1, taylor, random")
    parser.add_argument("--finetune-iters", type=int, help="solver iterations of each retraining")
    parser.add_argument("--scratch-iters", type=int, help="solver iterations of the from-scratch ablation")
    parser.add_argument("--stats-limit", type=int, help="images used for the statistics (default: all)")
    parser.add_argument("--tolerance", type=float, help="stop when top-1 falls this many points below the baseline")
    parser.add_argument("--no-scratch", action="store_true", help="skip the from-scratch ablation")
    parser.add_argument("--restart", action="store_true", help="delete the output folder's state and start over")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    schedule = load_schedule(
        args.schedule,
        out=str(args.out) if args.out else None,
        iterations=args.iterations,
        finetune_iters=args.finetune_iters,
        criterion=args.criterion,
        scratch_iters=args.scratch_iters,
        stats_limit=args.stats_limit,
        tolerance=args.tolerance,
        scratch=False if args.no_scratch else None,
    )
    if args.restart and schedule.out.exists():
        shutil.rmtree(schedule.out)
    loop = Loop(schedule, progress=not args.quiet)
    if loop.state["iterations"] or loop.state["baseline"]:
        print(f"resuming from {loop.state_path}")
    state = loop.run()
    report = write(state, schedule.out, f"Network Trimming: {schedule.name}")
    print()
    print(markdown(report, f"Network Trimming: {schedule.name}"))
    print(f"written: {schedule.out / 'report.md'}, {schedule.out / 'report.json'}")
    return 0


if __name__ == "__main__":
    run(main)
