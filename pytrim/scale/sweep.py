"""A sweep: independent runs (criteria x nets x points x seeds), each in its own child
process (pytrim.core.runner.run_step, so a Caffe abort ends one run, not the sweep), one after
another, or as Ray tasks over a local Ray's workers or a cluster (pytrim.scale.cluster), one
GPU per task where the cluster has GPUs. A failing run is reported and the others go on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytrim.core.errors import PytrimError, user_message
from pytrim.core.runner import run_step
from pytrim.scale import cluster


@dataclass
class Run:
    """One run: `python -m pytrim <command> <args>`, its log, and whether it gets a GPU."""

    label: str
    command: str
    args: list[str]
    log: Path
    gpu: bool = False


@dataclass
class Outcome:
    """A run's JSON result, or its error and the node it failed on."""

    run: Run
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    node: str | None = None


def run_one(run: Run) -> dict[str, Any]:
    """Run in a child process; on a GPU worker Ray has made the assigned GPU device 0."""
    env = {"PYTRIM_GPU": "0"} if run.gpu else {}
    return run_step(run.command, run.args, run.log, run.label, env=env).result


def serial(runs: list[Run], done: Callable[[Outcome], None]) -> list[Outcome]:
    outcomes = []
    for run in runs:
        try:
            outcome = Outcome(run, run_one(run))
        except PytrimError as exc:
            outcome = Outcome(run, error=user_message(exc) or str(exc), node="this machine")
        done(outcome)
        outcomes.append(outcome)
    return outcomes


def sweep(runs: list[Run], workers: int | None, address: str | None, done: Callable[[Outcome], None]) -> list[Outcome]:
    """Every run's outcome (in the order they end); `done` is called as each one ends."""
    if not cluster.wanted(workers, address) or not runs:
        return serial(runs, done)
    outcomes = []
    with cluster.session(workers, address) as session:
        gpu = session.gpus > 0
        for run in runs:
            run.gpu = gpu
        for run, raw in cluster.as_completed(session, run_one, runs, gpu):
            outcome = Outcome(run, raw.get("result") or {}, raw.get("error"), raw.get("node"))
            done(outcome)
            outcomes.append(outcome)
    return outcomes
