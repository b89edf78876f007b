"""A trimming run being carried out: its schedule, its keyed state, its log, and how its steps
are keyed and launched (pytrim.loop.steps and pytrim.loop.evaluation are the steps).

Steps that run Caffe run in child processes (pytrim.core.runner), with the BLAS kernels and
thread count pinned (pytrim.caffeio.env.blas_env: the same numbers on any x86-64 machine
with AVX2). Training gains nothing from a second BLAS thread, so children run with one, and
steps that do not depend on each other (the test and validation evaluations; the cut net's
evaluations and its retraining) run side by side on the cores, at most `jobs` at once.
Their results do not depend on it (one BLAS thread each, pinned kernels): `--jobs 1` gives
the same report, serially.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytrim.caffeio.env import blas_env
from pytrim.caffeio.proto import with_test_data
from pytrim.core.runner import run_step
from pytrim.loop.schedule import LayerPlan, Schedule
from pytrim.loop.state import RunState, step_key

SHARDED = ("collect", "evaluate", "score")  # commands that split their images among Ray workers


@dataclass
class Nets:
    """A net as files: train_val prototxt, deploy prototxt (optional), caffemodel."""

    net: Path
    deploy: Path | None
    weights: Path


@dataclass
class Iteration:
    """One try of a trimming iteration: what it trims, how, and where its files go. The first
    try (`letter` "a") follows the plan; a later one takes a smaller step from the same parent
    (`shrink`: without the groups the plan added, or each group's removal halved) and reads the
    first try's statistics (`first`)."""

    number: int
    plan: LayerPlan
    source: Nets
    folder: Path
    record: dict[str, Any]
    letter: str = "a"
    shrink: dict[str, Any] | None = None
    first: dict[str, Any] | None = None  # the first try's record (its statistics are this try's too)

    @property
    def label(self) -> str:
        return f"Trim-{self.number}" + ("" if self.letter == "a" else self.letter)

    @property
    def stats(self) -> Path:
        """The statistics of the source net (the first try's folder: every try has the same parent)."""
        return self.folder.parent / f"iter-{self.number:02d}" / "stats.h5"

    @property
    def trimmed(self) -> Nets:
        deploy = self.folder / "deploy.prototxt" if self.source.deploy else None
        return Nets(self.folder / "train_val.prototxt", deploy, self.folder / "trimmed.caffemodel")

    @property
    def retrained(self) -> Path:
        return self.folder / "retrained.caffemodel"


@dataclass
class Step:
    """A step to run: its name, key material, the work and its outputs (pytrim.loop.state)."""

    name: str
    settings: dict[str, Any]
    inputs: dict[str, Path | None]
    run: Callable[[], dict[str, Any]]
    outputs: list[Path]
    label: str = ""


class Run:
    """A schedule being run: its state, its log and how its steps are keyed and launched."""

    def __init__(self, schedule: Schedule, progress: bool = True, log: Callable[[str], None] = print,
                 sharding: list[str] | None = None, jobs: int | None = None) -> None:  # fmt: skip
        self.s, self.progress, self.log = schedule, progress, log
        self.jobs = max(1, jobs or os.cpu_count() or 1)  # steps at once
        self.sharding = sharding or []  # --workers/--ray-address for the passes over images (not in keys)
        self.retime = False  # --retime: the speed steps are computed again, whatever their keys
        self.state = RunState(schedule.out, log)

    def key(self, step: Step) -> str:
        return step_key(step.name.split(":")[0], step.settings, step.inputs)

    def step(self, record: dict[str, Any], name: str, settings: dict[str, Any], inputs: dict[str, Path | None],
             work: Callable[[], dict[str, Any]], outputs: list[Path] = (), label: str = "") -> dict:  # type: ignore[assignment]  # fmt: skip
        step = Step(name, settings, inputs, work, list(outputs), label or name)
        return self.state.step(record, name, self.key(step), work, step.outputs, step.label)

    def side_by_side(self, record: dict[str, Any], steps: list[Step]) -> list[dict[str, Any]]:
        """Several independent steps, the ones not already done run concurrently (one core each)."""
        keys = [self.key(step) for step in steps]
        found = [self.state.reuse(record, s.name, k, s.outputs, s.label) for s, k in zip(steps, keys, strict=True)]
        todo = [i for i, result in enumerate(found) if result is None]

        def timed(step: Step) -> tuple[dict[str, Any], float]:
            start = time.monotonic()
            return step.run(), time.monotonic() - start

        with ThreadPoolExecutor(max_workers=max(1, min(len(todo), self.jobs))) as pool:
            done = list(pool.map(timed, [steps[i] for i in todo]))
        for i, (result, seconds) in zip(todo, done, strict=True):
            self.state.keep(record, steps[i].name, keys[i], result, seconds, steps[i].outputs)
            found[i] = result
        return found  # type: ignore[return-value]

    def together(self, *works: Callable[[], Any]) -> list[Any]:
        """Independent pieces of work (each a few steps) at once when `jobs` allows, their
        results in order. They record only through the state (under its lock)."""
        if self.jobs == 1:
            return [work() for work in works]
        with ThreadPoolExecutor(max_workers=len(works)) as pool:
            futures = [pool.submit(work) for work in works]
            return [future.result() for future in futures]

    def child(self, command: str, args: list[str], log: Path, what: str, threads: int = 1) -> dict[str, Any]:
        """`python -m pytrim <command>` with pinned BLAS kernels and `threads` BLAS threads."""
        sharding = self.sharding if command in SHARDED else []
        env = blas_env(threads) if command != "speed" else {}
        return run_step(command, [*args, *sharding, "--quiet"], log, what, env=env).result

    def on(self, net: Path, source: Path | None, kind: str) -> Path:
        """`net` reading `source` as its TEST data (the validation split, the statistics data),
        or `net` itself when there is no such source. Written inside the run's folder."""
        if source is None:
            return net
        inside = net.resolve().is_relative_to(self.s.out.resolve())
        folder = net.parent if inside else self.s.out / "nets"  # never beside the user's prototxt
        folder.mkdir(parents=True, exist_ok=True)
        return with_test_data(net, source, folder / f"{net.stem}.{kind}.prototxt")
