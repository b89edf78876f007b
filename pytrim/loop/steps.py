"""The steps of a trimming run, each a small function over the run's keyed state.

Each step (baseline, collect, select, cut, verify, retrain, the final and from-scratch
statistics; evaluation and decisions are pytrim.loop.evaluation) records its result under a
key of its inputs' contents, data, settings and version (pytrim.loop.state): a rerun reuses
it only when the key is unchanged. Steps that run Caffe run in child processes
(pytrim.loop.run): an abort becomes an error naming the step and its log, and nothing
finished is lost. pytrim.loop.driver strings them together.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from pytrim.caffeio.caffemodel import count_params
from pytrim.caffeio.proto import read_net, read_solver
from pytrim.core.errors import StepFailed, TrainingDiverged
from pytrim.core.files import write_json
from pytrim.feeds.source import data_source
from pytrim.graph.build import net_graph
from pytrim.graph.queries import neighbours, widths_text
from pytrim.loop import plan as auto
from pytrim.loop.evaluation import measure
from pytrim.loop.run import Iteration, Nets, Run
from pytrim.loop.schedule import AUTO
from pytrim.retrain.solver import init_weights, train
from pytrim.stats.collect import LayerStats
from pytrim.stats.statsfile import load_stats
from pytrim.surgery.choose import Rule, choose, load_selection
from pytrim.surgery.cut import cut

VERIFY_TOL = 1e-5
T = TypeVar("T")


def lowering_rate(run: Run, base_lr: float, out: Path, work: Callable[[float], T]) -> tuple[T, float]:
    """`work(base_lr)`; on a NaN loss, again with a 10x lower learning rate (three tries)."""
    for attempt in range(3):
        lr = base_lr * 0.1**attempt
        try:
            return work(lr), lr
        except TrainingDiverged as exc:
            run.log(f"  training diverged ({exc}); retrying with base_lr {lr * 0.1:g}")
    raise StepFailed(f"training {out} diverged three times (log in {out.with_suffix('.train')})")


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
    start = weights

    def work(lr: float) -> Any:
        return train(solver, out, start, out.with_suffix(".train"), iters, net, run.progress, base_lr=lr, **extra)

    result, lr = lowering_rate(run, base_lr, out, work)
    tests = {str(k): v for k, v in result.tests.items()}
    return {"iterations": result.iterations, "final_loss": result.final_loss, "base_lr": lr, "tests": tests}


def collect_step(run: Run, it: Iteration) -> dict[str, Any]:
    """APoZ statistics of every trimmable layer of the iteration's input net (recorded with the
    first try: a later try has the same parent)."""
    record, folder = (it.record, it.folder) if it.first is None else (it.first, it.stats.parent)
    extra = ["--plots", str(folder / "plots")] + (["--keep-means"] if run.s.fold_mean else [])
    return collect(run, record, it.source, folder, f"iteration {it.number}", extra, {"means": run.s.fold_mean})


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


def mean_apoz(collected: dict[str, Any], relu_only: bool = False) -> dict[str, float]:
    """Each layer's mean APoZ from a collect step's result (`relu_only`: only the layers
    measured after a ReLU, APoZ's own domain)."""
    return {name: v["mean"] for name, v in collected["layers"].items() if not relu_only or v["relu"]}


def cut_step(run: Run, it: Iteration) -> dict[str, Any]:
    """The trimmed prototxts and caffemodel (pytrim.surgery.cut, checked before anything is written)."""
    src, out = it.source, it.trimmed

    def do_cut() -> dict[str, Any]:
        nets = [p for p in (src.net, src.deploy) if p is not None]
        outs = [p for p in (out.net, out.deploy) if p is not None]
        selections = load_selection(it.folder / "selection.json")
        fold = load_stats(it.stats).means if run.s.fold_mean else None
        result = cut(nets, src.weights, selections, outs, out.weights, run.s.allow_inexact, fold)
        if fold:  # the same cut without folding, to report what folding gained before retraining
            plain = it.folder / "nofold"
            cut([src.net], src.weights, selections, [plain / "train_val.prototxt"], plain / "trimmed.caffemodel")
        return {"params": result.params_after, "widths": result.widths_after, "inexact": result.inexact}

    inputs = {"net": src.net, "deploy": src.deploy, "weights": src.weights, "selection": it.folder / "selection.json"}
    inputs |= {"stats": it.stats} if run.s.fold_mean else {}
    outputs = [p for p in (out.net, out.deploy, out.weights) if p is not None]
    settings = {"allow_inexact": run.s.allow_inexact, "fold_mean": run.s.fold_mean}
    return run.step(it.record, "cut", settings, inputs, do_cut, outputs, f"cut ({it.label})")


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
            args += ["--fold-mean", "--stats", str(it.stats)] if run.s.fold_mean else []
            what = f"verify {kind} ({it.label}); the cut is rejected"
            results[kind] = run.child("verify", args, it.folder / f"logs/verify-{kind}.log", what)
        return {"max_relative_diff": max(r["max_relative_diff"] for r in results.values()), "nets": results}

    inputs = {"net": src.net, "deploy": src.deploy, "weights": src.weights, "selection": selection}
    inputs |= {"trimmed_net": out.net, "trimmed_deploy": out.deploy, "trimmed_weights": out.weights}
    settings = {"tol": VERIFY_TOL, "allow_inexact": run.s.allow_inexact, "fold_mean": run.s.fold_mean}
    return run.step(it.record, "verify", settings, inputs, verify_all, [], f"verify ({it.label})")


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


def export_step(run: Run, record: dict[str, Any], nets: Nets) -> dict[str, Any]:
    """The result as an ONNX model, <out>/final.onnx, proven equal to Caffe in ONNX Runtime
    (`pytrim export` in a child process; the deploy prototxt when the schedule has one)."""
    net, out = nets.deploy or nets.net, run.s.out / "final.onnx"
    args = ["--net", str(net), "--weights", str(nets.weights), "--out", str(out)]
    work = lambda: run.child("export", args, run.s.out / "logs/export.log", "export the result to ONNX")  # noqa: E731
    found = run.step(record, "export", {"tol": VERIFY_TOL}, {"net": net, "weights": nets.weights}, work, [out],
                     "export the result to ONNX")  # fmt: skip
    return {"path": str(out), "ok": found["ok"], "max_relative_diff": found["max_relative_diff"],
            "end_to_end_max_relative_diff": found.get("end_to_end_max_relative_diff"),
            "inputs": found["inputs"], "outputs": found["outputs"]}  # fmt: skip


def baseline(run: Run) -> dict[str, Any]:
    """The baseline's weights (trained if the schedule allows it), size and metric."""
    s, record = run.s, run.state.data["baseline"]
    if not s.weights.is_file():
        run.log(f"baseline: {s.weights} missing, training it with {s.baseline_solver}")
        run.step(record, "train", {}, {"solver": s.baseline_solver, "net": s.net},
                 lambda: train_step(run, s.baseline_solver, s.net, s.weights, None, None), [s.weights])  # fmt: skip
    measured = measure(run, record, "baseline", s.net, s.weights, s.out / "logs")
    test = measured["test"]
    record.update(widths=widths_text(s.net), params=count_params(s.weights), top1=test["top1"], top5=test["top5"])
    record.update(images=test["images"], top1_stderr=test["top1_stderr"], decide=measured["decide"])
    record["test_scores"] = test["scores"]
    record.update(value=test["value"], stderr=test["stderr"], val_top1=(measured["val"] or {}).get("top1"))
    record.update(val_value=(measured["val"] or {}).get("value"), machine=machine(test))
    run.state.save()
    shown = f"top-1 {record['top1']:.2%}" if record["top1"] is not None else f"{s.metric} {record['value']:.4g}"
    run.log(f"baseline: {record['widths']}, {record['params']:,} parameters, {shown}")
    return record


def machine(evaluation: dict[str, Any]) -> dict[str, Any]:
    """What the children computed with (recorded in the report): CPU, BLAS kernels, threads."""
    return {key: evaluation.get(key) for key in ("cpu", "cores", "blas_core", "blas_threads")}


def scores(run: Run, it: Iteration, layers: list[str]) -> dict[str, np.ndarray]:
    """Per-neuron prunability of the plan's criterion: APoZ from the statistics, or another
    unit criterion scored in a child process (`pytrim score`)."""
    if it.plan.criterion == "apoz":
        stats = load_stats(it.stats)
        return {name: stats.find(name).apoz for name in layers}
    out = it.folder / "scores.npz"
    net = run.on(it.source.net, run.s.stats_data, "stats")
    args = ["--net", str(net), "--weights", str(it.source.weights), "--criterion", it.plan.criterion]
    args += ["--layers", ",".join(layers), "--out", str(out)]
    args += ["--images", str(run.s.stats_images)] if run.s.stats_images else []
    run.child("score", args, it.folder / "logs/score.log", f"score with {it.plan.criterion} ({it.label})")
    with np.load(out) as stored:
        return {name: stored[name] for name in stored.files}


def offered(run: Run, it: Iteration, collected: dict[str, Any], chain: list[dict[str, Any]]) -> dict[str, str]:
    """The layers the iteration's rule is applied to, with why: the plan's list, or the
    automated plan's choice (pytrim.loop.plan, after the tries on the way here: `chain`); a
    try without the newest groups offers its first try's groups but those."""
    if it.plan.layers != AUTO:
        found = {name: "listed in the schedule" for name in it.plan.layers}
    else:
        touching = neighbours(net_graph(it.source.net, allow_inexact=run.s.allow_inexact)[1])
        found = auto.candidates(it.number, chain, mean_apoz(collected, relu_only=True), touching, run.s.auto_start,
                                run.s.auto_grow)  # fmt: skip
    if it.shrink and it.shrink["kind"] == "without":
        found = {name: why for name, why in found.items() if name not in it.shrink["groups"]}
    if it.shrink and it.shrink["kind"] == "halved":
        found = {name: f"{it.shrink['from']}'s removal halved" for name in it.shrink["removed"]}
    return found


def rule_of(it: Iteration, name: str) -> Rule:
    """The plan's rule for a layer; a halved try removes half of what the try before removed
    (kept widths rounded per round_to, but never removing nothing)."""
    if not it.shrink or it.shrink["kind"] != "halved":
        return it.plan.rule_for(name)
    count = max(1, it.shrink["removed"][name] // 2)
    return Rule("count", count=count, round_to=it.plan.round_to, min_keep=it.plan.min_keep.get(name, 1))


def chosen_of(it: Iteration, name: str, scores: np.ndarray, group: LayerStats) -> dict[str, Any]:
    found = choose(name, scores, rule_of(it, name), group.blocks, group.parts)
    if it.shrink and it.shrink["kind"] == "halved" and found.keep.size == found.width:  # rounding took it all back
        found = choose(name, scores, replace(rule_of(it, name), round_to=1), group.blocks, group.parts)
    return found.to_json()


def select_step(run: Run, it: Iteration, collected: dict[str, Any], chain: list[dict[str, Any]]) -> dict[str, Any]:
    """The neurons to remove per layer (selection.json), by the plan's criterion and rule (or
    the try's smaller step); with the automated plan, the groups whose rule selects nothing drop out."""
    candidates = offered(run, it, collected, chain)

    def select() -> dict[str, Any]:
        scored, stats = scores(run, it, list(candidates)), load_stats(it.stats)
        chosen = {name: chosen_of(it, name, scored[name], stats.find(name)) for name in candidates}
        sizes = {name: {"width": c["width"], "kept": c["kept"]} for name, c in chosen.items()}
        plan = auto.split(candidates, sizes)
        entries = [chosen[name] for name in plan["trimmed"]] if it.plan.layers == AUTO else list(chosen.values())
        write_json(it.folder / "selection.json", {"weights_sha256": stats.weights_sha256, "layers": entries})
        return {"layers": sizes, "plan": plan}

    src = it.source
    settings = {"plan": it.plan.settings(), "limit": run.s.stats_images, "offered": candidates, "shrink": it.shrink}
    inputs = {"stats": it.stats, "net": src.net, "weights": src.weights}
    outputs, label = [it.folder / "selection.json"], f"select ({it.label})"
    return run.step(it.record, "select", settings, inputs, select, outputs, label)


def scratch(run: Run, net: Path) -> dict[str, Any]:
    """The ablation: the final widths trained from scratch with the baseline's recipe, and
    their APoZ."""
    s, record = run.s, run.state.data["scratch"]
    out = s.out / "scratch" / "scratch.caffemodel"
    iters = s.scratch_iters or read_solver(s.baseline_solver).max_iter
    inputs = {"solver": s.baseline_solver, "net": net}
    work = lambda: train_step(run, s.baseline_solver, net, out, None, iters)  # noqa: E731
    run.step(record, "train", {"iters": iters}, inputs, work, [out], "from-scratch training")
    measured = measure(run, record, "scratch", net, out, s.out / "scratch")
    collected = stats_step(run, record, Nets(net, None, out), s.out / "scratch", "from scratch")
    record.update(net=str(net), widths=widths_text(net), params=count_params(out), iterations=iters)
    test = measured["test"]
    record.update(top1=test["top1"], top1_stderr=test["top1_stderr"], value=test["value"], stderr=test["stderr"])
    record["mean_apoz"] = mean_apoz(collected)
    run.state.save()
    run.log(f"from scratch: {record['widths']}, {s.metric} {record['value']:.4g} after {iters} iterations")
    return record
