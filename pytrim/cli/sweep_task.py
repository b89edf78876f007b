"""One task of `sweep-criteria` (run by it as a child process, pytrim.scale.sweep): prune,
retrain and measure the task a spec file describes, keep its result.json, print its entry."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytrim.core.files import read_json
from pytrim.experiments.pruners import run_spec


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", type=Path, required=True, help="the task's spec.json (written by sweep-criteria)")


def execute(args: argparse.Namespace) -> dict[str, Any]:
    entry = run_spec(read_json(args.spec, "task spec"))
    if not args.quiet:
        print(f"{entry['criterion']} {entry['point']:g} seed {entry['seed']}: top-1 {entry['top1']:.2%}")
    return entry
