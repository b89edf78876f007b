"""Retraining a cut, sized to the drop it has to recover.

With `eval_every` (and a validation split) every snapshot Caffe writes while retraining is scored
on the validation split as it appears, paired image by image with the baseline as the loop's
decisions are (pytrim.loop.evaluation), and the retraining keeps the best snapshot, not the
last. It stops early when validation has not improved for `patience` evaluations, and when the
planned `finetune_iters` end while it still improves and the cut is still beyond the tolerance,
it goes on from its own solverstate, up to `max_finetune_iters` (the solver's rate schedule is
then spread over the longer run, so a `poly` rate rises again from where it is: a warm restart).
Every evaluation is a keyed step of the try's record: a resumed run trains again (the same
snapshots, byte for byte) and reuses what was scored. Decisions never read the test set.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytrim.caffeio.proto import read_solver
from pytrim.core.files import together
from pytrim.loop.evaluation import evaluate_step, oriented
from pytrim.loop.run import Iteration, Run
from pytrim.loop.steps import curve, lowering_rate, train_step
from pytrim.retrain.solver import train
from pytrim.stats.evaluate import Scores, paired


@dataclass
class Watch:
    """Scores each snapshot on the validation split; says when retraining should stop."""

    run: Run
    it: Iteration
    patience: int
    curve: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    since: int = 0  # evaluations since the best

    def __call__(self, iteration: int, snapshot: Path) -> bool:
        found = self.score(iteration, snapshot)
        self.curve.append(found)
        if self.best is None or found["loss"] < self.best["loss"]:
            self.best, self.since = found, 0
        else:
            self.since += 1
        self.run.log(f"  {self.it.label} retraining, iteration {iteration}: {abs(found['loss']):.3g} "
                     f"{'worse' if found['loss'] > 0 else 'better'} than the baseline on validation")  # fmt: skip
        return self.since >= self.patience

    def score(self, iteration: int, snapshot: Path) -> dict[str, Any]:
        run, it = self.run, self.it
        net = run.on(it.trimmed.net, run.s.val_data, "val")
        step = evaluate_step(run, f"snapshot{iteration}@val", net, snapshot, it.folder / "logs")
        (result,) = run.side_by_side(it.record, [step])
        base = Scores.load(run.state.data["baseline"]["decide"]["scores"])
        difference, stderr = paired(base, Scores.load(result["scores"]))
        return {"iteration": iteration, "snapshot": str(snapshot), "value": result["value"],
                "difference": difference, "stderr": stderr, "loss": oriented(run, difference)}  # fmt: skip


def longer(run: Run, it: Iteration, watch: Watch, done: int) -> int | None:
    """The next length of a retraining that reached its end still improving: until it is within
    the tolerance or reaches max_finetune_iters (None: it ends here)."""
    limit = it.plan.max_finetune_iters
    if not limit or done >= limit or watch.best is None or watch.best["loss"] <= run.s.tolerance:
        return None
    return min(done + it.plan.finetune_iters, limit)


def validated(run: Run, it: Iteration, extra: dict[str, Any]) -> dict[str, Any]:
    """Retrain with every snapshot scored on validation; keep the best one as retrained.caffemodel."""
    out, solver, every = it.trimmed, run.s.finetune_solver, it.plan.eval_every
    base_lr = extra.pop("base_lr", None) or read_solver(solver).base_lr
    workdir = it.retrained.with_suffix(".train")

    def work(lr: float) -> tuple[Watch, int, str]:
        shutil.rmtree(workdir, ignore_errors=True)
        watch, total, resume = Watch(run, it, it.plan.patience), it.plan.finetune_iters, None
        while True:
            done = train(solver, it.retrained, out.weights, workdir, total, out.net, run.progress, every, watch,
                         resume, base_lr=lr, **extra)  # fmt: skip
            if done.stopped_at is not None:
                return watch, done.stopped_at, f"no improvement on validation in {it.plan.patience} evaluations"
            following = longer(run, it, watch, total)
            if following is None:
                return watch, total, "the planned iterations" if total == it.plan.finetune_iters else "extended"
            run.log(f"  {it.label}: still improving and beyond the tolerance: retraining on to {following}")
            resume, total = workdir / f"snapshot_iter_{total}.solverstate", following

    (watch, iterations, why), lr = lowering_rate(run, base_lr, it.retrained, work)
    assert watch.best is not None
    with together([it.retrained]) as (partial,):
        shutil.copyfile(watch.best["snapshot"], partial)
    return {"iterations": iterations, "base_lr": lr, "best_iteration": watch.best["iteration"], "ended": why,
            "validation": watch.curve}  # fmt: skip


def retrain_step(run: Run, it: Iteration) -> dict[str, Any]:
    """Fine-tune the trimmed net from its surviving weights (or, with 0 iterations, keep it):
    the planned iterations, or with eval_every the best snapshot on validation (above)."""
    out, iters, solver = it.trimmed, it.plan.finetune_iters, run.s.finetune_solver
    if iters == 0:  # a width plan applied without retraining: the trimmed net is the result
        it.retrained.unlink(missing_ok=True)
        os.link(out.weights, it.retrained)
        return {"skipped": True}
    every, lr = run.s.curve_every, it.plan.finetune_lr
    rate = {"base_lr": lr} if lr else {}  # without finetune_lr, the keys of earlier runs stay valid
    settings, extra = {"iters": iters, "curve_every": every} | rate, curve(out.net, every) | rate
    inputs = {"solver": solver, "net": out.net, "weights": out.weights}
    if it.plan.eval_every:
        settings |= {"eval_every": it.plan.eval_every, "patience": it.plan.patience,
                     "max_finetune_iters": it.plan.max_finetune_iters, "tolerance": run.s.tolerance}  # fmt: skip
        inputs |= {"baseline_scores": Path(run.state.data["baseline"]["decide"]["scores"])}
        work = lambda: validated(run, it, dict(extra))  # noqa: E731
    else:
        work = lambda: train_step(run, solver, out.net, it.retrained, out.weights, iters, extra)  # noqa: E731
    return run.step(it.record, "retrain", settings, inputs, work, [it.retrained], f"retrain ({it.label})")
