"""The trimming loop: baseline, then per iteration collect -> select -> cut -> verify ->
evaluate -> retrain -> evaluate -> cost, then the final net's statistics and the
from-scratch ablation.

Decisions never look at the test set when the schedule names a validation split
(`val_data`): each iteration keeps the better, on validation, of its cut and its retrained
weights; it is accepted when its paired difference to the baseline is within the tolerance
as a point estimate, and the loop stops when an iteration is beyond the tolerance by more
than the difference's standard error (pytrim.loop.evaluation). The result is the last
accepted iteration. The test set gives the numbers reported. The steps are
pytrim.loop.steps; the run folder carries pytrim's marker and a lock, so a second run on it
is refused instead of interleaving.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytrim.caffeio.netcheck import check_model
from pytrim.caffeio.upgrade import current_format
from pytrim.core.errors import BadInput, StepFailed
from pytrim.core.files import FolderLock, claim_run_folder, marker_kind
from pytrim.graph.queries import widths_text
from pytrim.loop import plan as auto
from pytrim.loop.evaluation import better, judge, measure, speed_step
from pytrim.loop.retraining import retrain_step
from pytrim.loop.run import Iteration, Nets, Run
from pytrim.loop.schedule import Schedule, validate
from pytrim.loop.steps import (
    baseline,
    collect_step,
    cut_step,
    export_step,
    mean_apoz,
    scratch,
    select_step,
    stats_step,
    verify_step,
)

TRIES = "abcdefghij"  # the letters of an iteration's tries: Trim-3, Trim-3b, Trim-3c, ...


def keep_better(run: Run, it: Iteration, before: dict, after: dict | None) -> dict[str, Any]:
    """The iteration's result: its retrained weights, or its cut ones when those decide
    better (on validation when there is a validation split)."""
    record = it.record
    if after is None or better(run, before["decide"], after["decide"]):
        kept, weights, result = "trimmed", it.trimmed.weights, before
    else:
        kept, weights, result = "retrained", it.retrained, after
    record.update(kept=kept, weights=str(weights), top1=result["test"]["top1"], decide=result["decide"])
    record["test_scores"] = result["test"]["scores"]
    record.update(top1_stderr=result["test"]["top1_stderr"], val_top1=(result["val"] or {}).get("top1"))
    record.update(value=result["test"]["value"], val_value=(result["val"] or {}).get("value"))
    return record


def summarize(run: Run, it: Iteration, cut_result: dict, verified: dict, before: dict, after: dict | None) -> None:
    """The iteration's line of the paper's table, in its record."""
    after = after or before
    it.record.update(
        widths=widths_text(it.trimmed.net),
        params=cut_result["params"],
        compression=run.state.data["baseline"]["params"] / cut_result["params"],
        top1_trimmed=before["test"]["top1"],
        top5_trimmed=before["test"]["top5"],
        top1_retrained=after["test"]["top1"],
        top5_retrained=after["test"]["top5"],
        value_trimmed=before["test"]["value"],
        value_retrained=after["test"]["value"],
        val_top1_trimmed=(before["val"] or {}).get("top1"),
        val_top1_retrained=(after["val"] or {}).get("top1"),
        verify_max_relative_diff=verified["max_relative_diff"],
    )
    run.state.save()


def evaluate_cut(run: Run, it: Iteration, logs: Any) -> tuple[dict[str, Any], float | None]:
    """The cut net measured, and with --fold-mean the top-1 of the same cut without folding."""
    before = measure(run, it.record, "trimmed", it.trimmed.net, it.trimmed.weights, logs)
    if not run.s.fold_mean:
        return before, None
    plain = it.folder / "nofold"
    unfolded = measure(run, it.record, "trimmed_nofold", plain / "train_val.prototxt", plain / "trimmed.caffemodel",
                       logs)  # fmt: skip
    return before, unfolded["test"]["top1"]


def attempt(run: Run, it: Iteration, chain: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One try of an iteration; returns its record, or None when nothing is left to trim."""
    collected = collect_step(run, it)
    it.record.update(mean_apoz=mean_apoz(collected), label=it.label, shrink=it.shrink)
    chosen = select_step(run, it, collected, chain)
    it.record.update(plan=chosen["plan"], layers=chosen["plan"]["trimmed"], folder=it.folder.name,
                     selected=chosen["layers"])  # fmt: skip
    if not chosen["plan"]["trimmed"]:
        run.log(f"{it.label}: no neuron is chosen for removal; nothing left to trim")
        it.record["nothing_to_trim"] = True
        run.state.save()
        return None
    it.record.pop("nothing_to_trim", None)
    cut_result, verified = cut_step(run, it), verify_step(run, it)
    logs = it.folder / "logs"
    (before, nofold), retrained = run.together(lambda: evaluate_cut(run, it, logs), lambda: retrain_step(run, it))
    if nofold is not None:
        it.record["top1_trimmed_nofold"] = nofold
    after = None
    if not retrained.get("skipped"):
        after = measure(run, it.record, "retrained", it.trimmed.net, it.retrained, logs)
        it.record["curve"] = retrained.get("tests", {})
        it.record["retraining"] = {k: retrained.get(k) for k in ("iterations", "best_iteration", "ended", "validation")}
    keep_better(run, it, before, after)
    summarize(run, it, cut_result, verified, before, after)
    net, base_net = it.trimmed.deploy or it.trimmed.net, run.s.deploy or run.s.net
    it.record["cost"] = speed_step(run, it.record, base_net, run.s.weights, net, it.trimmed.weights)
    run.log(f"{it.label}: {it.record['widths']}, {it.record['params']:,} parameters "
            f"({it.record['compression']:.2f}x, {it.record['cost']['macs_ratio']:.2f}x fewer MACs), "
            f"keeps the {it.record['kept']} weights")  # fmt: skip
    return it.record


def verdict_line(record: dict[str, Any]) -> str:
    """The decision on one try, its paired difference said as better or worse."""
    verdict = "accepted" if record["accepted"] else "not accepted (beyond the tolerance)"
    change = "worse" if record["loss"] > 0 else "better"
    return (f"  {record['label']} {verdict}: {abs(record['loss']):.3g} {change} than the baseline ± "
            f"{record['loss_stderr']:.3g} (paired)")  # fmt: skip


def smaller(run: Run, record: dict[str, Any]) -> dict[str, Any] | None:
    """How the next try of an iteration steps less far than `record`: first without the groups
    its plan added (the newest neighbours), then with each group's removal halved; None when
    no smaller step is left (every group lost one channel)."""
    added = auto.newest(record["plan"]) if record.get("try", "a") == "a" else []
    kept = [name for name in record["plan"]["trimmed"] if name not in added]
    if added and kept:
        return {"kind": "without", "groups": added, "why": f"without the groups its plan added ({', '.join(added)})"}
    removed = {name: size["width"] - size["kept"] for name, size in record["selected"].items()
               if name in record["plan"]["trimmed"]}  # fmt: skip
    if all(count <= 1 for count in removed.values()):
        return None
    return {"kind": "halved", "removed": removed, "from": record["label"], "why": "each group's removal halved"}


def iteration(run: Run, base: dict[str, Any], number: int, source: Nets,
              chain: list[dict[str, Any]]) -> dict[str, Any] | None:  # fmt: skip
    """Iteration `number`: its first try, then (while a try is not accepted) up to `retries`
    smaller steps from the same parent; the record the loop goes on from (None: nothing left)."""
    plan, first, shrink, record = run.s.plan_for(number), None, None, None
    for index in range(run.s.retries + 1):
        letter = TRIES[index]
        folder = run.s.out / (f"iter-{number:02d}" + ("" if letter == "a" else letter))
        it = Iteration(number, plan, source, folder, run.state.attempt(number, letter), letter, shrink, first)
        found = attempt(run, it, chain)
        if found is None:
            return record
        record = found
        run.state.data.setdefault("tried", []).append([number, letter])
        judge(run, base, record)
        record["why_try"] = (shrink or {}).get("why", "the plan")
        run.state.save()
        run.log(verdict_line(record))
        first = first or record
        shrink = None if record["accepted"] or index == run.s.retries else smaller(run, record)
        if shrink is None:
            break
        run.log(f"  trying {TRIES[index + 1]}: a smaller step from the same parent, {shrink['why']}")
    return record


def iterate(run: Run, base: dict[str, Any]) -> Nets:
    """Iterations until the schedule's count, the stop rule or nothing left; returns the
    accepted net (the baseline when no iteration is accepted)."""
    s = run.s
    accepted, nets, result = None, Nets(s.net, s.deploy, s.weights), Nets(s.net, s.deploy, s.weights)
    chain: list[dict[str, Any]] = []
    run.state.data["tried"] = []
    for number in range(1, s.iterations + 1):
        record = iteration(run, base, number, nets, chain)
        if record is None:
            break
        chain.append(record)
        if record["stopped"]:
            run.log(f"stop: {record['stopped']}; the result is {accepted['label'] if accepted else 'the baseline'}")
            break
        folder = s.out / record["folder"]
        deploy = folder / "deploy.prototxt" if s.deploy else None
        nets = Nets(folder / "train_val.prototxt", deploy, folder / f"{record['kept']}.caffemodel")
        if record["accepted"]:
            accepted, result = record, nets
    run.state.data["result_label"] = accepted["label"] if accepted else None
    run.state.data["final_iteration"] = accepted["iteration"] if accepted else 0
    run.state.save()
    return result


def check_inputs(s: Schedule) -> None:
    """The schedule's files exist (weights may be trained, if the schedule says so), fit its
    nets, and what it names is in them (pytrim.loop.schedule.validate)."""
    for what, path in (("net", s.net), ("deploy", s.deploy), ("baseline_solver", s.baseline_solver)):
        if path is not None and not path.is_file():
            raise BadInput(f"the schedule's {what} not found: {path}")
    for what, path in (("finetune_solver", s.finetune_solver), ("val_data", s.val_data), ("stats_data", s.stats_data)):
        if path is not None and not path.exists():
            raise BadInput(f"the schedule's {what} not found: {path}")
    if s.weights.is_file():
        for net in (s.net, s.deploy):
            if net is not None:
                check_model(net, s.weights)
    elif not s.train_missing_weights:
        raise BadInput(
            f"baseline weights not found: {s.weights} (give --weights, or set train_missing_weights = true "
            f"in the schedule to train them with {s.baseline_solver})"
        )
    validate(s)


def prepare(s: Schedule, log: Callable[[str], None] = print) -> Schedule:
    """A schedule ready to run: old-format (V0/V1) inputs upgraded with Caffe's tools into
    pytrim's cache, every input checked. Before any output is written."""
    s.net, s.deploy = current_format(s.net, "net", log), current_format(s.deploy, "net", log)
    if s.weights.is_file():
        s.weights = current_format(s.weights, "weights", log)
    check_inputs(s)
    return s


def finish(run: Run, final: Nets) -> None:
    """The final net's statistics (its APoZ beside the iterations'), its ONNX export and the
    ablation."""
    if not run.state.data["final_iteration"]:
        return
    record = run.state.data.setdefault("final", {})
    collected = stats_step(run, record, final, run.s.out / "final", "the final net")
    record["mean_apoz"] = mean_apoz(collected)
    record["onnx"] = export_step(run, record, final)
    run.state.save()
    if run.s.scratch:
        scratch(run, final.net)


def run_schedule(schedule: Schedule, progress: bool = True, log: Callable[[str], None] = print,
                 sharding: list[str] | None = None, jobs: int | None = None,
                 retime: bool = False) -> dict[str, Any]:  # fmt: skip
    """Run (or resume) a schedule in its output folder, holding the folder's lock; `sharding`
    (--workers N / --ray-address A) splits its statistics and evaluations among Ray workers;
    `jobs` steps at most run side by side (default: the cores); `retime` times every try again."""
    s = prepare(schedule, log)
    claim_run_folder(s.out, marker_kind(s.out) or "trim")  # a command (vgg16) may have claimed it
    with FolderLock(s.out):
        run = Run(s, progress, log, sharding, jobs)
        run.retime = retime
        if run.state.resumed:
            log(f"resuming from {run.state.path}")
        try:
            finish(run, iterate(run, baseline(run)))
        except StepFailed as exc:  # a file changed from outside: --restart, not "run it again"
            raise run.state.damaged(exc) or exc from None
        return run.state.data
