"""Pruning criteria compared fairly: accuracy-versus-compression curves on the same nets, data
and retraining budget, several seeds per point.

Each task is one (net, criterion, point, seed):
- unit criteria (apoz, mean_activation, l1, taylor, random) cut the same fraction (the
  point) of every trimmable channel group at once, physically, and every cut is verified
  against the silenced original (a cut that does not verify fails the run);
- magnitude (Han et al. 2015) prunes iteratively: over `rounds` rounds the threshold rises to
  point x the layer's weight std, with retraining between rounds;
- relief (NN Relief, the authors' rule) prunes for `rounds` rounds with alpha = the point (fc;
  conv 0.05 lower), retraining between rounds; neurons left without incoming weights and
  bias, or without outgoing connections, are then cut physically (verified).
Every task retrains with the same solver and the same total budget (iterative methods split
it over their rounds), with the pruned connections held at zero, keeping the checkpoint
with the best validation accuracy. Statistics come from a seeded random sample of training
images; the validation split (held out from the training images) chooses checkpoints; the
test set is used only for the numbers reported. The seed also shuffles the training data
(Caffe's Data layer reads in order) and seeds the random criterion.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffemodel import Caffemodel
from pytrim.choose import Rule, Selection, choose
from pytrim.collect import collect_layer_data, net_graph
from pytrim.criteria import CONNECTION, UNIT, magnitude_mask, unit_scores
from pytrim.cut import count_params, cut, trimmable
from pytrim.errors import BadInput, StepFailed
from pytrim.files import sha256_file, write_json
from pytrim.masked import train_masked
from pytrim.protoutil import read_net, write_text
from pytrim.relief import masked_weights

REPORT_NOTE = (
    "Statistics come from a random sample of training images; the validation split (held out from the "
    "training images) chooses the retraining checkpoints; the test set gives only the numbers reported."
)


@dataclass
class NetFiles:
    """One net of the comparison: its train_val, trained weights and fine-tuning solver."""

    name: str
    net: Path
    weights: Path
    baseline_solver: Path
    finetune_solver: Path


@dataclass
class Data:
    """The LMDBs: training images (sampled, shuffled), validation split, test set."""

    train: Path
    val: Path
    test: Path


@dataclass
class Settings:
    """The points of each criterion's curve, the seeds and the shared retraining budget."""

    unit_points: tuple[float, ...] = (0.25, 0.5, 0.75)  # fraction of each group's channels cut
    magnitude_points: tuple[float, ...] = (0.5, 1.0, 1.5)  # final threshold, x the weight std
    relief_points: tuple[float, ...] = (0.99, 0.95, 0.9)  # alpha of the fc layers (conv: 0.05 lower)
    seeds: tuple[int, ...] = (0, 1, 2)
    budget: int = 600  # solver iterations of retraining per task
    rounds: int = 3  # rounds of the iterative criteria (the budget is split over them)
    stats_images: int = 1000
    select_every: int = 200  # validation checks while retraining (the best checkpoint is kept)
    verify_tol: float = 1e-5  # a physical cut must verify within this (relative)

    def points(self, criterion: str) -> tuple[float, ...]:
        if criterion in UNIT:
            return self.unit_points
        return self.magnitude_points if criterion == "magnitude" else self.relief_points


@dataclass(frozen=True)
class Task:
    net: str
    criterion: str
    point: float
    seed: int

    @property
    def folder(self) -> str:
        return f"{self.net}/{self.criterion}/{self.point:g}/seed{self.seed}"


def all_tasks(nets: list[str], criteria: list[str], settings: Settings) -> list[Task]:
    unknown = [c for c in criteria if c not in UNIT + CONNECTION]
    if unknown:
        raise BadInput(f"unknown criteria: {', '.join(unknown)} (choose from {', '.join(UNIT + CONNECTION)})")
    return [
        Task(net, criterion, point, seed)
        for net in nets
        for criterion in criteria
        for point in settings.points(criterion)
        for seed in settings.seeds
    ]


@dataclass
class Work:
    """What one task works on: its folder, the net reading this seed's data (TRAIN: shuffled
    training images; TEST: the random sample statistics are measured on), the data."""

    task: Task
    files: NetFiles
    data: Data
    settings: Settings
    folder: Path
    net: Path
    sample: Path

    def evaluate(self, net: Path, weights: Path, source: Path) -> float:
        from pytrim.relief import accuracy

        return accuracy(net, weights, source, self.folder)


# --- one task ---------------------------------------------------------------------------------


def seed_data(data: Data, settings: Settings, seed: int, out: Path) -> tuple[Path, Path]:
    """This seed's shuffled training LMDB and its random sample of training images (made
    once, shared by the seed's tasks)."""
    from pytrim.datasets import sample_lmdb

    folder = out / "data" / f"seed{seed}"
    train, sample = folder / "train_lmdb", folder / "sample_lmdb"
    if not (train / "data.mdb").is_file():
        sample_lmdb(data.train, train, None, seed)
    if not (sample / "data.mdb").is_file():
        sample_lmdb(data.train, sample, settings.stats_images, seed + 1000)
    return train, sample


def prepare(task: Task, files: NetFiles, data: Data, settings: Settings, out: Path) -> Work:
    """A task's folder and its net reading this seed's shuffled training data and sample."""
    from pytrim.protoutil import set_data_sources

    train, sample = seed_data(data, settings, task.seed, out)
    folder = out / task.folder
    folder.mkdir(parents=True, exist_ok=True)
    net = write_text(set_data_sources(read_net(files.net), train, sample), folder / "net.prototxt")
    return Work(task, files, data, settings, folder, net, sample)


def retrain(work: Work, net: Path, weights: Path, masks: dict, iterations: int, name: str) -> tuple[Path, float]:
    """The shared retraining: the fine-tuning solver, masks held at zero, best validation checkpoint."""
    out = work.folder / f"{name}.caffemodel"
    result = train_masked(work.files.finetune_solver, weights, masks, out, net, iterations, False,
                          work.settings.select_every, work.data.val)  # fmt: skip
    return out, result["val_top1"]


def unit_prune(work: Work) -> tuple[Path, Path, dict, bool | None]:
    """One-shot: the point's fraction of every trimmable group's channels, cut and verified."""
    from pytrim.verify import verify

    t = work.task
    groups = list(trimmable(net_graph(work.net)[1]))
    stats = collect_layer_data(work.net, work.files.weights, groups, taylor=t.criterion == "taylor")
    selections = {g: choose(g, unit_scores(t.criterion, stats[g], t.seed), Rule("ratio", ratio=t.point))
                  for g in groups}  # fmt: skip
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
    from pytrim.relief import relief_round

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
    from pytrim.graph import consumers

    alive = np.zeros(group.width, dtype=bool)
    for producer in group.producers:
        axis = next(u.params[0][1] for u in graph.uses if u.layer == producer and u.kind == "producer")
        rows = np.moveaxis(model.arrays(producer)[0], axis, 0).reshape(group.width, -1)
        bias = model.arrays(producer)[1] if len(model.layers[producer].blobs) > 1 else np.zeros(group.width)
        alive |= (rows != 0).any(axis=1) | (bias.reshape(-1) != 0)
    for use in consumers(graph, group):
        read = np.moveaxis(masks[use.layer], use.params[0][1], 1)
        alive &= read.reshape(read.shape[0], group.width, -1).any(axis=(0, 2))
    return ~alive


def cut_emptied(work: Work, weights: Path, masks: dict[str, np.ndarray]) -> tuple[Path, Path, dict, bool | None]:
    """Cut (and verify) the channels the masks emptied; the masks then follow the cut net."""
    from pytrim.verify import verify

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
    from pytrim.measure import flops
    from pytrim.netcheck import load_net

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
        "flops": flops(load_net(net, final), read_net(net)),
        "seconds": round(time.monotonic() - start, 1),
    }


# --- the sweep and its report --------------------------------------------------------------


def task_key(task: Task, files: NetFiles, settings: Settings) -> dict[str, Any]:
    """Everything a task's result depends on: reusing a finished task needs the same key
    (as it reads back from JSON)."""
    import json

    key = {"task": asdict(task), "settings": asdict(settings), "weights": sha256_file(files.weights)}
    return json.loads(json.dumps(key))


def finished(task: Task, files: NetFiles, settings: Settings, out: Path) -> dict[str, Any] | None:
    """A task's entry from its result.json when the key matches (a rerun keeps what is done)."""
    from pytrim.files import read_json

    result = out / task.folder / "result.json"
    if result.is_file():
        stored = read_json(result, "task result")
        if stored.get("key") == task_key(task, files, settings):
            return stored["entry"]
    return None


def task_run(task: Task, files: NetFiles, data: Data, settings: Settings, out: Path) -> Any:
    """The task as a child run (`python -m pytrim compare-task --spec FILE`, pytrim.sweep)."""
    from pytrim.sweep import Run

    spec = {"task": asdict(task), "files": asdict(files), "data": asdict(data), "settings": asdict(settings),
            "out": str(out)}  # fmt: skip
    folder = out / task.folder
    write_json(folder / "spec.json", json_safe(spec))
    return Run(task.folder, "compare-task", ["--spec", str(folder / "spec.json")], folder / "task.log")


def json_safe(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


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


def prepare_seeds(data: Data, settings: Settings, out: Path) -> None:
    """Every seed's shuffled training data and sample, made before tasks run side by side."""
    for seed in settings.seeds:
        seed_data(data, settings, seed, out)


def baselines(nets: dict[str, NetFiles], data: Data, out: Path) -> dict[str, dict[str, Any]]:
    """Each net's parameters and test/validation top-1 (trained first when missing)."""
    from pytrim.evaluate import top1_on
    from pytrim.train import train_baseline

    found = {}
    for name, files in nets.items():
        train_baseline(files.baseline_solver, files.weights, files.net)
        params = count_params(files.weights)
        top1 = {}
        for split, source in (("top1", data.test), ("val_top1", data.val)):
            top1[split] = top1_on(files.net, files.weights, source, out / f"{name}-{split}.prototxt")
        found[name] = {"params": params, **top1}
    return found


def summary(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per net, criterion and point: the mean and spread (standard deviation) over the seeds."""
    groups: dict[tuple, list[dict]] = {}
    for e in entries:
        groups.setdefault((e["net"], e["criterion"], e["point"]), []).append(e)
    rows = []
    for (net, criterion, point), runs in groups.items():
        top1 = np.array([r["top1"] for r in runs])
        compression = np.array([r["compression"] for r in runs])
        rows.append({"net": net, "criterion": criterion, "point": point, "seeds": len(runs),
                     "compression": float(compression.mean()), "compression_std": float(compression.std()),
                     "top1": float(top1.mean()), "top1_std": float(top1.std()),
                     "top1_before": float(np.mean([r["top1_before"] for r in runs])),
                     "verified": verified_of(runs)})  # fmt: skip
    return rows


def verified_of(runs: list[dict[str, Any]]) -> bool | None:
    """True when every physical cut of the seeds verified; None when no seed cut anything
    physically (magnitude: masks only)."""
    checked = [r["verified"] for r in runs if r["verified"] is not None]
    return all(checked) if checked else None


VERIFIED = {True: "yes", False: "NO", None: "no cut (masks)"}


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = ["# Pruning criteria compared", "", REPORT_NOTE, "",
             f"Every point is retrained {s['budget']} solver iterations (iterative criteria: {s['rounds']} rounds "
             f"within that budget), over {len(s['seeds'])} seeds; mean ± standard deviation over the seeds. "
             "Compression = baseline parameters / non-zero parameters. Unit criteria are cut physically and every cut "
             "is verified.", ""]  # fmt: skip
    for net, base in report["baselines"].items():
        lines.append(f"{net}: baseline {base['params']:,} parameters, test top-1 {base['top1']:.2%}.")
    lines += ["", "| Net | Criterion | Point | Compression | Top-1 before retraining | Top-1 | Verified |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in report["summary"]:
        lines.append(
            f"| {r['net']} | {r['criterion']} | {r['point']:g} | {r['compression']:.2f}x ± {r['compression_std']:.2f} "
            f"| {r['top1_before']:.2%} | {100 * r['top1']:.2f}% ± {100 * r['top1_std']:.2f} "
            f"| {VERIFIED[r['verified']]} |"
        )
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> Path:
    """Top-1 after retraining against compression: one curve per criterion (error bars: the
    spread over the seeds), one panel per net."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = list(report["baselines"])
    fig, axes = plt.subplots(1, len(nets), figsize=(6.5 * len(nets), 4.4), squeeze=False)
    for ax, net in zip(axes[0], nets, strict=True):
        if not any(r["net"] == net for r in report["summary"]):
            ax.set(title=f"{net}: no task finished yet")
            continue
        for criterion in dict.fromkeys(r["criterion"] for r in report["summary"]):
            rows = sorted((r for r in report["summary"] if r["net"] == net and r["criterion"] == criterion),
                          key=lambda r: r["compression"])  # fmt: skip
            ax.errorbar([r["compression"] for r in rows], [100 * r["top1"] for r in rows],
                        yerr=[100 * r["top1_std"] for r in rows], marker="o", capsize=3, label=criterion)  # fmt: skip
        ax.axhline(100 * report["baselines"][net]["top1"], color="grey", linestyle="--", label="baseline")
        ax.set(xscale="log", xlabel="compression (baseline / non-zero parameters)", ylabel="test top-1 (%)", title=net)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    from pytrim.files import together

    with together([path]) as (partial,):
        fig.savefig(partial, dpi=100, format="png")
    plt.close(fig)
    return path


def write_report(entries: list[dict], bases: dict, settings: Settings, out: Path, failed: list | None = None) -> dict:
    from pytrim.files import write_atomic

    report = {"note": REPORT_NOTE, "settings": asdict(settings), "baselines": bases, "entries": entries,
              "summary": summary(entries), "failed": failed or []}  # fmt: skip
    write_json(out / "report.json", report)
    write_atomic(out / "report.md", markdown(report))
    plot(report, out / "accuracy_vs_compression.png")
    return report


def run_comparison(nets: dict[str, NetFiles], data: Data, tasks: list[Task], settings: Settings, out: Path,
                   workers: int | None = None, address: str | None = None, log: Callable = print) -> dict:  # fmt: skip
    """Every task's entry (finished ones kept, the others run as a sweep: one after another,
    or side by side on Ray workers), the report written as tasks end. Tasks that fail are
    listed in the report and then fail the command; the others are kept."""
    from pytrim.sweep import sweep

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
