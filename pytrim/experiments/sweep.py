"""The criteria sweep (`python -m pytrim sweep-criteria`, make lenet-compare): every task's
entry, finished ones kept, the others run as child processes one after another or side by
side on Ray workers (pytrim.scale.sweep), the report rewritten as tasks end."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pytrim.caffeio.caffemodel import count_params
from pytrim.core.errors import StepFailed
from pytrim.core.files import write_json
from pytrim.experiments.pruners import finished
from pytrim.experiments.sweep_report import write_report
from pytrim.experiments.sweep_tasks import Data, NetFiles, Settings, Task, seed_data
from pytrim.retrain.solver import train_baseline
from pytrim.scale.sweep import Run, sweep
from pytrim.stats.evaluate import top1_on


def task_run(task: Task, files: NetFiles, data: Data, settings: Settings, out: Path) -> Any:
    """The task as a child run (`python -m pytrim sweep-task --spec FILE`, pytrim.scale.sweep)."""
    spec = {"task": asdict(task), "files": asdict(files), "data": asdict(data), "settings": asdict(settings),
            "out": str(out)}  # fmt: skip
    folder = out / task.folder
    write_json(folder / "spec.json", json_safe(spec))
    return Run(task.folder, "sweep-task", ["--spec", str(folder / "spec.json")], folder / "task.log")


def json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def prepare_seeds(data: Data, settings: Settings, out: Path) -> None:
    """Every seed's shuffled training data and sample, made before tasks run side by side."""
    for seed in settings.seeds:
        seed_data(data, settings, seed, out)


def baselines(nets: dict[str, NetFiles], data: Data, out: Path) -> dict[str, dict[str, Any]]:
    """Each net's parameters and test/validation top-1 (trained first when missing)."""
    found = {}
    for name, files in nets.items():
        train_baseline(files.baseline_solver, files.weights, files.net)
        params = count_params(files.weights)
        top1 = {}
        for split, source in (("top1", data.test), ("val_top1", data.val)):
            top1[split] = top1_on(files.net, files.weights, source, out / f"{name}-{split}.prototxt")
        found[name] = {"params": params, **top1}
    return found


def run_comparison(nets: dict[str, NetFiles], data: Data, tasks: list[Task], settings: Settings, out: Path,
                   workers: int | None = None, address: str | None = None, log: Callable = print) -> dict:  # fmt: skip
    """Every task's entry (finished ones kept, the others run as a sweep: one after another,
    or side by side on Ray workers), the report written as tasks end. Tasks that fail are
    listed in the report and then fail the command; the others are kept."""
    bases = baselines(nets, data, out)
    prepare_seeds(data, settings, out)
    entries = {task: finished(task, nets[task.net], settings, out) for task in tasks}
    todo = {task.folder: task for task, entry in entries.items() if entry is None}
    failed: list[dict[str, Any]] = []

    def done(outcome: Any) -> None:
        task = todo[outcome.run.label]
        if outcome.error:
            failed.append({"task": task.folder, "error": outcome.error, "node": outcome.node})
            log(f"{task.folder}: FAILED on {outcome.node}: {outcome.error}")
        else:
            entries[task] = outcome.result
            log(f"{task.folder}: {outcome.result['compression']:.2f}x, top-1 {outcome.result['top1']:.2%}")
        write_report([e for e in entries.values() if e], bases, settings, out, failed)

    runs = [task_run(task, nets[task.net], data, settings, out) for task in todo.values()]
    sweep(runs, workers, address, done)
    report = write_report([e for e in entries.values() if e], bases, settings, out, failed)
    if failed:
        first = failed[0]
        raise StepFailed(f"{len(failed)} of {len(tasks)} tasks failed (the others are in the report); "
                         f"{first['task']}: {first['error']}")  # fmt: skip
    return report
