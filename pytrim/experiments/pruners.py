"""How each task of the criteria sweep prunes, retrains and is measured (pytrim.experiments.
sweep_tasks describes the tasks): unit criteria cut a fraction of every trimmable group at
once (verified), magnitude and NN Relief mask connections over rounds with retraining
between (Relief's emptied neurons are then cut, verified). `run_spec` is what one task's
child process (`python -m pytrim sweep-task`) runs; its result.json is kept and reused while
the task's key (task, settings, weights) is unchanged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.caffemodel import Caffemodel, count_params
from pytrim.core.errors import StepFailed
from pytrim.core.files import read_json, sha256_file, write_json
from pytrim.criteria.relief import relief_round
from pytrim.criteria.scores import CONNECTION, UNIT, magnitude_mask, unit_scores
from pytrim.experiments.sweep_tasks import Data, NetFiles, Settings, Task, Work, prepare
from pytrim.graph.build import net_graph
from pytrim.graph.queries import consumers, read_by, rows_of, trimmable
from pytrim.retrain.masked import masked_weights, train_masked
from pytrim.stats.cost import size
from pytrim.stats.layer_data import collect_layer_data
from pytrim.surgery.choose import Rule, Selection, choose
from pytrim.surgery.cut import cut
from pytrim.surgery.verify import verify


def retrain(work: Work, net: Path, weights: Path, masks: dict, iterations: int, name: str) -> tuple[Path, float]:
    """The shared retraining: the fine-tuning solver, masks held at zero, best validation checkpoint."""
    out = work.folder / f"{name}.caffemodel"
    result = train_masked(work.files.finetune_solver, weights, masks, out, net, iterations, False,
                          work.settings.select_every, work.data.val)  # fmt: skip
    return out, result["val_top1"]


def unit_prune(work: Work) -> tuple[Path, Path, dict, bool | None]:
    """One-shot: the point's fraction of every trimmable group's channels, cut and verified."""
    t = work.task
    found = trimmable(net_graph(work.net)[1])
    groups = list(found)
    stats = collect_layer_data(work.net, work.files.weights, groups, taylor=t.criterion == "taylor")
    selections = {g: choose(g, unit_scores(t.criterion, stats[g], t.seed), Rule("ratio", ratio=t.point),
                            found[g].blocks, found[g].parts) for g in groups}  # fmt: skip
    net, weights = work.folder / "pruned.prototxt", work.folder / "pruned.caffemodel"
    cut([work.net], work.files.weights, selections, [net], weights)
    require_verified(verify(work.net, work.files.weights, net, weights, selections, work.settings.verify_tol), t)
    return net, weights, {}, True


def require_verified(check: Any, task: Task) -> None:
    """A physical cut that does not verify fails the comparison."""
    if not check.ok:
        detail = check.problems[0] if check.problems else f"max relative difference {check.max_relative:.3g}"
        raise StepFailed(f"the cut of {task.folder} does not verify ({detail}): the comparison stops")


def magnitude_prune(work: Work) -> tuple[Path, Path, dict, bool | None]:
    """Han et al.: the threshold rises to point x std(w) of each layer over the rounds."""
    rounds, weights, masks = work.settings.rounds, work.files.weights, {}
    with Caffemodel(weights) as model:
        stds = {name: float(model.arrays(name)[0].std()) for name in model.layers}
    for number in range(1, rounds + 1):
        quality = work.task.point * number / rounds
        with Caffemodel(weights) as model:
            for name, std in stds.items():
                masks[name] = masks.get(name, True) & magnitude_mask(model.arrays(name)[0], quality, std)
        weights = masked_weights(weights, masks, work.folder / f"pruned-{number}.caffemodel")
        if number < rounds:
            weights, _ = retrain(work, work.net, weights, masks, work.settings.budget // rounds, f"round-{number}")
    return work.net, weights, masks, None


def relief_prune(work: Work) -> tuple[Path, Path, dict, bool | None]:
    """NN Relief's rule for the rounds (retraining between), then the neurons it emptied cut."""
    rounds, weights, masks = work.settings.rounds, work.files.weights, None
    alphas = (work.task.point - 0.05, work.task.point)
    for number in range(1, rounds + 1):
        masks = relief_round(work.net, weights, masks, work.sample, alphas, work.folder)
        weights = masked_weights(weights, masks, work.folder / f"pruned-{number}.caffemodel")
        if number < rounds:
            weights, _ = retrain(work, work.net, weights, masks, work.settings.budget // rounds, f"round-{number}")
    return cut_emptied(work, weights, masks)


def emptied(graph: Any, model: Caffemodel, masks: dict[str, np.ndarray], group: Any) -> np.ndarray:
    """Channels of a group with no weight and no bias left in its producers, or that no
    consumer reads any more."""
    alive = np.zeros(group.width, dtype=bool)
    for producer in group.producers:
        axis = next(u.params[0][1] for u in graph.uses if u.layer == producer and u.kind == "producer")
        rows = np.moveaxis(model.arrays(producer)[0], axis, 0)
        rows = rows.reshape(rows.shape[0], -1)
        bias = model.arrays(producer)[1] if len(model.layers[producer].blobs) > 1 else np.zeros(rows.shape[0])
        alive[rows_of(graph, producer)] |= (rows != 0).any(axis=1) | (bias.reshape(-1) != 0)
    for use in consumers(graph, group):
        alive &= read_by(graph, use, group, np.moveaxis(masks[use.layer], use.params[0][1], 1))
    return ~alive


def cut_emptied(work: Work, weights: Path, masks: dict[str, np.ndarray]) -> tuple[Path, Path, dict, bool | None]:
    """Cut (and verify) the channels the masks emptied; the masks then follow the cut net."""
    _, graph = net_graph(work.net)
    selections = {}
    with Caffemodel(weights) as model:
        for name, group in trimmable(graph).items():
            gone = emptied(graph, model, masks, group)
            keep = np.flatnonzero(~gone) if (~gone).any() else np.array([0])
            if keep.size < group.width:
                selections[name] = Selection(name, group.width, keep, np.setdiff1d(np.arange(group.width), keep))
    if not selections:
        return work.net, weights, masks, None
    net, cut_weights = work.folder / "cut.prototxt", work.folder / "cut.caffemodel"
    cut([work.net], weights, selections, [net], cut_weights)
    require_verified(verify(work.net, weights, net, cut_weights, selections, work.settings.verify_tol), work.task)
    with Caffemodel(cut_weights) as model:
        new = {key: model.arrays(key.partition("#")[0])[int(key.partition("#")[2] or 0)] != 0 for key in masks}
    return net, cut_weights, new, True


PRUNERS: dict[str, Callable[[Work], tuple[Path, Path, dict, bool | None]]] = {
    **dict.fromkeys(UNIT, unit_prune),
    "magnitude": magnitude_prune,
    "relief": relief_prune,
}


def counts(weights: Path) -> tuple[int, int]:
    """(parameters, non-zero parameters) of a caffemodel."""
    with Caffemodel(weights) as model:
        total = model.params()
        nonzero = sum(int(np.count_nonzero(b.data)) for layer in model.layers.values() for b in layer.blobs)
    return total, nonzero


def run_task(work: Work) -> dict[str, Any]:
    """Prune, then retrain with the rest of the budget; the task's report entry."""
    start, t, s = time.monotonic(), work.task, work.settings
    net, weights, masks, verified = PRUNERS[t.criterion](work)
    before = work.evaluate(net, weights, work.data.test)
    iterations = s.budget - (s.rounds - 1) * (s.budget // s.rounds) if t.criterion in CONNECTION else s.budget
    final, val_top1 = retrain(work, net, weights, masks, iterations, "retrained")
    params, nonzero = counts(final)
    base = count_params(work.files.weights)
    return {
        **asdict(t),
        "params": params,
        "nonzero": nonzero,
        "compression": base / nonzero,
        "top1": work.evaluate(net, final, work.data.test),
        "top1_before": before,
        "val_top1": val_top1,
        "verified": verified,
        "macs": size(net, final)["macs"],
        "seconds": round(time.monotonic() - start, 1),
    }


def task_key(task: Task, files: NetFiles, settings: Settings) -> dict[str, Any]:
    """Everything a task's result depends on: reusing a finished task needs the same key
    (as it reads back from JSON)."""
    key = {"task": asdict(task), "settings": asdict(settings), "weights": sha256_file(files.weights)}
    return json.loads(json.dumps(key))


def finished(task: Task, files: NetFiles, settings: Settings, out: Path) -> dict[str, Any] | None:
    """A task's entry from its result.json when the key matches (a rerun keeps what is done)."""
    result = out / task.folder / "result.json"
    if result.is_file():
        stored = read_json(result, "task result")
        if stored.get("key") == task_key(task, files, settings):
            return stored["entry"]
    return None


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the task a spec describes (in a child process) and keep its result.json."""
    task = Task(**spec["task"])
    files = NetFiles(**{k: v if k == "name" else Path(v) for k, v in spec["files"].items()})
    data = Data(**{k: Path(v) for k, v in spec["data"].items()})
    settings = Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["settings"].items()})
    out = Path(spec["out"])
    entry = run_task(prepare(task, files, data, settings, out))
    write_json(out / task.folder / "result.json", {"key": task_key(task, files, settings), "entry": entry})
    return entry
