"""How a run measures its nets and decides: every model is evaluated on the test set (what
the report gives) and, with a validation split, on it (what decides), each with its
per-image values kept; the cost of every trimmed net (parameters, MACs, forward time)
against the baseline; and the decision after each iteration, on the paired difference to
the baseline on the deciding split.

An iteration is *accepted* (it may be the result) when its point estimate is within the
tolerance of the baseline: the standard error never widens what is accepted. The loop stops
only when an iteration is significantly beyond the tolerance (by more than one standard
error of the paired difference); an iteration in between is not accepted, but the loop goes
on from it (retraining a further cut may bring it back within the tolerance).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytrim.loop.run import Run, Step
from pytrim.stats.evaluate import ACCURACY, Scores, paired


def evaluate_step(run: Run, name: str, net: Path, weights: Path, logs: Path) -> Step:
    """The metric (top-1, or the schedule's blob) of `weights` on the TEST data of `net`, its
    per-image values kept in logs/scores-<name>.npz (a child process)."""
    s, values = run.s, logs / f"scores-{name.replace('@', '-')}.npz"
    args = ["--net", str(net), "--weights", str(weights), "--metric", s.metric, "--out", str(values)]
    args += ["--lower-is-better"] if s.lower_is_better else []

    def work() -> dict[str, Any]:
        found = run.child("evaluate", args, logs / f"evaluate-{name}.log", f"evaluate {weights}")
        return found | {"scores": str(values)}

    settings = {"metric": s.metric, "lower": s.lower_is_better} if s.metric != ACCURACY else {}
    return Step(f"evaluate:{name}", settings, {"net": net, "weights": weights}, work, [values], f"evaluate {weights}")


def measure(run: Run, record: dict[str, Any], name: str, net: Path, weights: Path, logs: Path) -> dict[str, Any]:
    """The test-set evaluation (reported) and, with a validation split, the validation one
    (deciding), side by side."""
    steps = [evaluate_step(run, name, net, weights, logs)]
    if run.s.val_data is not None:
        steps.append(evaluate_step(run, f"{name}@val", run.on(net, run.s.val_data, "val"), weights, logs))
    test, *val = run.side_by_side(record, steps)
    return {"test": test, "val": val[0] if val else None, "decide": val[0] if val else test}


def speed_step(run: Run, record: dict[str, Any], base: Path, base_weights: Path, net: Path, weights: Path) -> dict:
    """Parameters, MACs, caffemodel bytes and forward time of a trimmed net against the
    baseline (interleaved in one child process, every core)."""
    args = ["--net", str(base), "--weights", str(base_weights), "--trimmed-net", str(net)]
    args += ["--trimmed-weights", str(weights), "--repeats", "5"]

    def work() -> dict[str, Any]:
        cost = run.child("speed", args, net.parent / "logs/speed.log", f"speed of {net}")
        return {**cost["nets"][0], "threads": cost["threads"], "blas_core": cost["blas_core"], "cpu": cost["cpu"]}

    inputs = {"base": base, "base_weights": base_weights, "net": net, "weights": weights}
    if run.retime and (record.get("steps") or {}).pop("speed", None) is not None:
        run.log(f"timing {net} again (--retime)")
    return run.step(record, "speed", {}, inputs, work, [], f"speed of {net}")


def oriented(run: Run, difference: float) -> float:
    """A difference (other - baseline) as a loss in the tolerance's units (> 0: worse)."""
    return (difference if run.s.lower_is_better else -difference) * run.s.points


def judge(run: Run, base: dict[str, Any], record: dict[str, Any]) -> None:
    """The iteration's paired difference to the baseline on the deciding split, whether it is
    accepted (within the tolerance, as a point estimate) and whether the loop stops (beyond
    the tolerance by more than one standard error)."""
    difference, stderr = paired(Scores.load(base["decide"]["scores"]), Scores.load(record["decide"]["scores"]))
    loss, noise = oriented(run, difference), stderr * run.s.points
    on = "validation" if run.s.val_data is not None else "test"
    record.update(difference=difference, difference_stderr=stderr, loss=loss, loss_stderr=noise)
    record["accepted"] = loss <= run.s.tolerance
    test = paired(Scores.load(base["test_scores"]), Scores.load(record["test_scores"]))  # reported, never decides
    record.update(test_difference=test[0], test_difference_stderr=test[1])
    record["stopped"] = None
    if loss > run.s.tolerance + noise:
        record["stopped"] = (f"{on} {run.s.metric} is {loss:.3g} below the baseline's, beyond the tolerance of "
                             f"{run.s.tolerance:g} by more than the paired standard error {noise:.3g}")  # fmt: skip


def better(run: Run, a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether evaluation `a` is better than `b` on the metric."""
    return a["value"] < b["value"] if run.s.lower_is_better else a["value"] > b["value"]
