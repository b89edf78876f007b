"""The steps of a trimming run, each a small function over the run's keyed state.

Each step (baseline, collect, select, cut, verify, evaluate, retrain, the final and
from-scratch statistics) records its result under a key of its inputs' contents, data,
settings and version (pytrim.loop.state): a rerun reuses it only when the key is unchanged.
Steps that run Caffe run in child processes (pytrim.core.runner): an abort becomes an error
naming the step and its log, and nothing finished is lost. pytrim.loop.driver strings them together.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.caffemodel import count_params
from pytrim.caffeio.proto import read_net, read_solver, with_test_data
from pytrim.core.errors import StepFailed, TrainingDiverged
from pytrim.core.files import write_json
from pytrim.core.runner import run_step
from pytrim.feeds.source import data_source
from pytrim.graph.queries import widths_text
from pytrim.loop.schedule import LayerPlan, Schedule
from pytrim.loop.state import RunState, step_key
from pytrim.retrain.solver import init_weights, train
from pytrim.stats.statsfile import load_stats
from pytrim.surgery.choose import choose, load_selection
from pytrim.surgery.cut import cut

VERIFY_TOL = 1e-5


@dataclass
class Nets:
    """A net as files: train_val prototxt, deploy prototxt (optional), caffemodel."""

    net: Path
    deploy: Path | None
    weights: Path


@dataclass
class Iteration:
    """One trimming iteration: what it trims, how, and where its files go."""

    number: int
    plan: LayerPlan
    source: Nets
    folder: Path
    record: dict[str, Any]

    @property
    def trimmed(self) -> Nets:
        deploy = self.folder / "deploy.prototxt" if self.source.deploy else None
        return Nets(self.folder / "train_val.prototxt", deploy, self.folder / "trimmed.caffemodel")

    @property
    def retrained(self) -> Path:
        return self.folder / "retrained.caffemodel"


class Run:
    """A schedule being run: its state, its log and how its steps are keyed and launched."""

    def __init__(self, schedule: Schedule, progress: bool = True, log: Callable[[str], None] = print,
                 sharding: list[str] | None = None) -> None:  # fmt: skip
        self.s, self.progress, self.log = schedule, progress, log
        self.sharding = sharding or []  # --workers/--ray-address for the passes over images (not in keys)
        self.state = RunState(schedule.out, log)

    def step(
        self,
        record: dict[str, Any],
        name: str,
        settings: dict[str, Any],
        inputs: dict[str, Path | None],
        run: Callable[[], dict[str, Any]],
        outputs: list[Path] = (),  # type: ignore[assignment]
        label: str = "",
    ) -> dict[str, Any]:
        kind = name.split(":")[0]
        return self.state.step(record, name, step_key(kind, settings, inputs), run, outputs, label or name)

    def child(self, command: str, args: list[str], log: Path, what: str) -> dict[str, Any]:
        sharding = self.sharding if command in ("collect", "evaluate", "score") else []
        return run_step(command, [*args, *sharding, "--quiet"], log, what).result

    def on(self, net: Path, source: Path | None, kind: str) -> Path:
        """`net` reading `source` as its TEST data (the validation split, the statistics data),
        or `net` itself when there is no such source. Written inside the run's folder."""
        if source is None:
            return net
        inside = net.resolve().is_relative_to(self.s.out.resolve())
        folder = net.parent if inside else self.s.out / "nets"  # never beside the user's prototxt
        folder.mkdir(parents=True, exist_ok=True)
        return with_test_data(net, source, folder / f"{net.stem}.{kind}.prototxt")


def evaluate_step(run: Run, record: dict[str, Any], name: str, net: Path, weights: Path, logs: Path) -> dict:
    """Top-1/top-5 of `weights` on the TEST data of `net` (a child process)."""
    args = ["--net", str(net), "--weights", str(weights)]
    return run.step(
        record,
        f"evaluate:{name}",
        {},
        {"net": net, "weights": weights},
        lambda: run.child("evaluate", args, logs / f"evaluate-{name}.log", f"evaluate {weights}"),
        label=f"evaluate {weights}",
    )


def accuracy_step(run: Run, record: dict[str, Any], name: str, net: Path, weights: Path, logs: Path) -> dict:
    """Top-1/top-5 on the test data (what is reported) and, with a validation split, on it
    (what decides); each with its standard error."""
    test = evaluate_step(run, record, name, net, weights, logs)
    val = None
    if run.s.val_data is not None:
        val = evaluate_step(run, record, f"{name}@val", run.on(net, run.s.val_data, "val"), weights, logs)
    return {"test": test, "val": val, "decide": val or test}


def train_step(
    run: Run, solver: Path, net: Path, out: Path, weights: Path | None, iters: int | None, extra: dict | None = None
) -> dict:
    """Caffe's solver in a child process; on a NaN loss, retry with a 10x lower learning rate.
    Training from scratch starts from initial weights saved beside `out` (<out>.init.caffemodel).
    `extra` changes solver fields (base_lr included)."""
    extra = dict(extra or {})
    base_lr = extra.pop("base_lr", None) or read_solver(solver).base_lr
    if weights is None:
        weights = init_weights(solver, out.with_suffix(".init.caffemodel"), net)
    for attempt in range(3):
        lr = base_lr * 0.1**attempt
        try:
            result = train(
                solver,
                out,
                weights,
                out.with_suffix(".train"),
                iters,
                net,
                run.progress,
                base_lr=lr,
                **extra,
            )
        except TrainingDiverged as exc:
            run.log(f"  training diverged ({exc}); retrying with base_lr {lr * 0.1:g}")
            continue
        tests = {str(k): v for k, v in result.tests.items()}
        return {"iterations": result.iterations, "final_loss": result.final_loss, "base_lr": lr, "tests": tests}
    raise StepFailed(f"training {out} diverged three times (log in {out.with_suffix('.train')})")


def baseline(run: Run) -> dict[str, Any]:
    """The baseline's weights (trained if the schedule allows it), size and accuracy."""
    s, record = run.s, run.state.data["baseline"]
    if not s.weights.is_file():
        run.log(f"baseline: {s.weights} missing, training it with {s.baseline_solver}")
        run.step(
            record,
            "train",
            {},
            {"solver": s.baseline_solver, "net": s.net},
            lambda: train_step(run, s.baseline_solver, s.net, s.weights, None, None),
            [s.weights],
        )
    accuracy = accuracy_step(run, record, "baseline", s.net, s.weights, s.out / "logs")
    test = accuracy["test"]
    record.update(widths=widths_text(s.net), params=count_params(s.weights), top1=test["top1"], top5=test["top5"])
    record.update(images=test["images"], top1_stderr=test["top1_stderr"], decide=accuracy["decide"])
    record.update(val_top1=accuracy["val"]["top1"] if accuracy["val"] else None)
    run.state.save()
    run.log(f"baseline: {record['widths']}, {record['params']:,} parameters, top-1 {record['top1']:.2%}")
    return record


def collect_step(run: Run, it: Iteration) -> dict[str, Any]:
    """APoZ statistics of every trimmable layer of the iteration's input net."""
    extra = ["--plots", str(it.folder)] + (["--keep-means"] if run.s.fold_mean else [])
    return collect(run, it.record, it.source, it.folder, f"iteration {it.number}", extra, {"means": run.s.fold_mean})


def collect(run: Run, record: dict, nets: Nets, folder: Path, label: str, extra: list[str], settings: dict) -> dict:
    """`python -m pytrim collect` on a net (on the statistics data) into folder/stats.h5."""
    net, stats = run.on(nets.net, run.s.stats_data, "stats"), folder / "stats.h5"
    args = ["--net", str(net), "--weights", str(nets.weights), "--out", str(stats), *extra]
    args += ["--images", str(run.s.stats_images)] if run.s.stats_images else []
    return run.step(
        record,
        "collect",
        {"limit": run.s.stats_images} | settings,
        {"net": net, "weights": nets.weights},
        lambda: run.child("collect", args, folder / "logs/collect.log", f"collect ({label})"),
        [stats],
        f"collect ({label})",
    )


def mean_apoz(collected: dict[str, Any]) -> dict[str, float]:
    """Each layer's mean APoZ from a collect step's result."""
    return {name: v["mean"] for name, v in collected["layers"].items()}


def scores(run: Run, it: Iteration) -> dict[str, np.ndarray]:
    """Per-neuron prunability of the plan's criterion: APoZ from the statistics, or another
    unit criterion scored in a child process (tools/score.py)."""
    if it.plan.criterion == "apoz":
        stats = load_stats(it.folder / "stats.h5")
        return {name: stats.find(name).apoz for name in it.plan.layers}
    out = it.folder / "scores.npz"
    net = run.on(it.source.net, run.s.stats_data, "stats")
    args = ["--net", str(net), "--weights", str(it.source.weights), "--criterion", it.plan.criterion]
    args += ["--layers", ",".join(it.plan.layers), "--out", str(out)]
    args += ["--images", str(run.s.stats_images)] if run.s.stats_images else []
    run.child("score", args, it.folder / "logs/score.log", f"score with {it.plan.criterion} (iteration {it.number})")
    with np.load(out) as stored:
        return {name: stored[name] for name in stored.files}


def select_step(run: Run, it: Iteration) -> dict[str, Any]:
    """The neurons to remove per layer (selection.json), by the plan's criterion and rule."""

    def select() -> dict[str, Any]:
        scored = scores(run, it)
        stats = load_stats(it.folder / "stats.h5")
        chosen = [
            choose(layer, scored[layer], it.plan.rule_for(layer), stats.find(layer).blocks).to_json()
            for layer in it.plan.layers
        ]
        sha = stats.weights_sha256
        write_json(it.folder / "selection.json", {"weights_sha256": sha, "layers": chosen})
        return {c["layer"]: {"width": c["width"], "kept": c["kept"]} for c in chosen}

    src = it.source
    return run.step(
        it.record,
        "select",
        {"plan": it.plan.settings(), "limit": run.s.stats_images},
        {"stats": it.folder / "stats.h5", "net": src.net, "weights": src.weights},
        select,
        [it.folder / "selection.json"],
        f"select (iteration {it.number})",
    )


def cut_step(run: Run, it: Iteration) -> dict[str, Any]:
    """The trimmed prototxts and caffemodel (pytrim.surgery.cut, checked before anything is written)."""
    src, out = it.source, it.trimmed

    def do_cut() -> dict[str, Any]:
        nets = [p for p in (src.net, src.deploy) if p is not None]
        outs = [p for p in (out.net, out.deploy) if p is not None]
        selections = load_selection(it.folder / "selection.json")
        fold = load_stats(it.folder / "stats.h5").means if run.s.fold_mean else None
        result = cut(nets, src.weights, selections, outs, out.weights, run.s.allow_inexact, fold)
        if fold:  # the same cut without folding, to report what folding gained before retraining
            plain = it.folder / "nofold"
            cut([src.net], src.weights, selections, [plain / "train_val.prototxt"], plain / "trimmed.caffemodel")
        return {"params": result.params_after, "widths": result.widths_after, "inexact": result.inexact}

    inputs = {"net": src.net, "deploy": src.deploy, "weights": src.weights, "selection": it.folder / "selection.json"}
    inputs |= {"stats": it.folder / "stats.h5"} if run.s.fold_mean else {}
    outputs = [p for p in (out.net, out.deploy, out.weights) if p is not None]
    settings = {"allow_inexact": run.s.allow_inexact, "fold_mean": run.s.fold_mean}
    return run.step(it.record, "cut", settings, inputs, do_cut, outputs, f"cut (iteration {it.number})")


def verify_step(run: Run, it: Iteration) -> dict[str, Any]:
    """The trimmed train_val (on its TEST data) and deploy (on random input) against the
    original with the removed neurons silenced; a failed check rejects the cut."""
    src, out, selection = it.source, it.trimmed, it.folder / "selection.json"
    pairs = [("train_val", src.net, out.net)] + ([("deploy", src.deploy, out.deploy)] if src.deploy else [])

    def verify_all() -> dict[str, Any]:
        results = {}
        for kind, net, trimmed in pairs:
            args = ["--net", str(net), "--weights", str(src.weights), "--trimmed-net", str(trimmed)]
            args += ["--trimmed-weights", str(out.weights), "--selection", str(selection)]
            args += ["--exact-tol", str(VERIFY_TOL)] + (
                ["--recipe", str(it.folder / "recipe.json")] if kind == "train_val" else []
            )
            args += ["--allow-inexact"] if run.s.allow_inexact else []
            args += ["--fold-mean", "--stats", str(it.folder / "stats.h5")] if run.s.fold_mean else []
            what = f"verify {kind} (iteration {it.number}); the cut is rejected"
            results[kind] = run.child("verify", args, it.folder / f"logs/verify-{kind}.log", what)
        return {"max_relative_diff": max(r["max_relative_diff"] for r in results.values()), "nets": results}

    inputs = {"net": src.net, "deploy": src.deploy, "weights": src.weights, "selection": selection}
    inputs |= {"trimmed_net": out.net, "trimmed_deploy": out.deploy, "trimmed_weights": out.weights}
    settings = {"tol": VERIFY_TOL, "allow_inexact": run.s.allow_inexact, "fold_mean": run.s.fold_mean}
    return run.step(it.record, "verify", settings, inputs, verify_all, [], f"verify (iteration {it.number})")


def retrain_step(run: Run, it: Iteration) -> dict[str, Any]:
    """Fine-tune the trimmed net from its surviving weights (or, with 0 iterations, keep it)."""
    out, iters, solver = it.trimmed, it.plan.finetune_iters, run.s.finetune_solver
    if iters == 0:  # a width plan applied without retraining: the trimmed net is the result
        it.retrained.unlink(missing_ok=True)
        os.link(out.weights, it.retrained)
        return {"skipped": True}
    every, lr = run.s.curve_every, it.plan.finetune_lr
    rate = {"base_lr": lr} if lr else {}  # without finetune_lr, the keys of earlier runs stay valid
    settings, extra = {"iters": iters, "curve_every": every} | rate, curve(out.net, every) | rate
    return run.step(
        it.record,
        "retrain",
        settings,
        {"solver": solver, "net": out.net, "weights": out.weights},
        lambda: train_step(run, solver, out.net, it.retrained, out.weights, iters, extra),
        [it.retrained],
        f"retrain (iteration {it.number})",
    )


def curve(net: Path, every: int) -> dict[str, Any]:
    """Solver settings that make Caffe score its TEST data (the test set) every `every`
    iterations while retraining (nothing when `every` is 0)."""
    if not every:
        return {}
    data = data_source(read_net(net))
    return {"test_interval": every, "test_iter": [math.ceil(data.total / data.batch)], "test_initialization": True}


def stats_step(run: Run, record: dict[str, Any], nets: Nets, folder: Path, label: str) -> dict[str, Any]:
    """APoZ statistics of a finished net (the final result, the from-scratch model): the
    paper sets the mean APoZ of the net trained from scratch beside the inherited one's."""
    return collect(run, record, nets, folder, label, [], {})


def scratch(run: Run, net: Path) -> dict[str, Any]:
    """The ablation: the final widths trained from scratch with the baseline's recipe, and
    their APoZ."""
    s, record = run.s, run.state.data["scratch"]
    out = s.out / "scratch" / "scratch.caffemodel"
    iters = s.scratch_iters or read_solver(s.baseline_solver).max_iter
    run.step(
        record,
        "train",
        {"iters": iters},
        {"solver": s.baseline_solver, "net": net},
        lambda: train_step(run, s.baseline_solver, net, out, None, iters),
        [out],
        "from-scratch training",
    )
    accuracy = accuracy_step(run, record, "scratch", net, out, s.out / "scratch")
    collected = stats_step(run, record, Nets(net, None, out), s.out / "scratch", "from scratch")
    record.update(net=str(net), widths=widths_text(net), params=count_params(out), iterations=iters)
    record.update(top1=accuracy["test"]["top1"], top1_stderr=accuracy["test"]["top1_stderr"])
    record["mean_apoz"] = mean_apoz(collected)
    run.state.save()
    run.log(f"from scratch: {record['widths']}, top-1 {record['top1']:.2%} after {iters} iterations")
    return record
