"""The trimming loop: baseline -> per iteration collect, select, cut, verify, retrain, evaluate.

A schedule file (TOML) names the net, its weights and solvers, the layers each iteration
trims and how, the fine-tuning budget and when to stop. Each iteration keeps its files in
its own folder (`<out>/iter-NN/`), and `<out>/state.json` records every finished step, so
a run that is killed or crashes resumes at the first unfinished step. Steps that run Caffe
(statistics, verification, evaluation, training) run in child processes: a Caffe abort
is reported as an error naming the step and its log, and nothing finished is lost.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.choose import Rule, Selection, choose
from pytrim.collect import load_stats, sha256_file
from pytrim.cut import count_params, cut
from pytrim.graph import TRIMMABLE, num_output
from pytrim.protoutil import read_net, write_atomic
from pytrim.train import TrainingDiverged, read_solver, train
from pytrim.upgrade import current_format

TOOLS = Path(__file__).resolve().parents[1] / "tools"


class StepFailed(RuntimeError):
    """A step of the loop failed; the state up to the previous step is saved."""


@dataclass
class LayerPlan:
    """How one iteration trims its layers."""

    layers: list[str]
    criterion: str = "apoz"  # any unit criterion of pytrim.criteria: apoz, mean_activation, l1, taylor, random
    rule: str = "apoz"
    k: float = 1.0
    ratio: float = 0.0
    count: int = 0
    min_keep: dict[str, int] = field(default_factory=dict)
    widths: dict[str, int] = field(default_factory=dict)  # a width plan: keep exactly these
    finetune_iters: int = 2000

    def __post_init__(self) -> None:
        from pytrim.criteria import UNIT

        if self.criterion not in UNIT:
            raise ValueError(f"unknown criterion {self.criterion!r} for the loop (one of {', '.join(UNIT)})")

    def rule_for(self, layer: str) -> Rule:
        if layer in self.widths:
            return Rule("keep", keep=self.widths[layer])
        return Rule(self.rule, k=self.k, ratio=self.ratio, count=self.count, min_keep=self.min_keep.get(layer, 1))


@dataclass
class Schedule:
    """A trimming run, as read from its TOML file."""

    net: Path
    deploy: Path | None
    weights: Path
    baseline_solver: Path
    finetune_solver: Path
    out: Path
    iterations: int
    plan: LayerPlan
    overrides: dict[int, dict[str, Any]] = field(default_factory=dict)
    tolerance: float = 0.2  # points of top-1 below the baseline that stop the loop
    stats_limit: int | None = None
    scratch: bool = True
    scratch_iters: int | None = None  # default: the baseline solver's max_iter
    name: str = "trim"

    def plan_for(self, iteration: int) -> LayerPlan:
        plan = copy.deepcopy(self.plan)
        for key, value in self.overrides.get(iteration, {}).items():
            if not hasattr(plan, key):
                raise ValueError(f"schedule: unknown key {key!r} for iteration {iteration}")
            setattr(plan, key, value)
        return plan


def resolve(path: str) -> Path:
    """A schedule's path: relative to the current directory, else to pytrim's repository root
    (the shipped schedules name prototxt/... and models/... from there)."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    rooted = TOOLS.parent / candidate
    return rooted if rooted.exists() else candidate


def load_schedule(path: str | Path, **overrides: Any) -> Schedule:
    """Read a schedule TOML; keyword overrides (not None) replace top-level or [trim] keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"schedule file not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from exc
    trim = dict(data.pop("trim", {}))
    iterations = data.pop("iteration", [])
    for key, value in overrides.items():
        if value is None:
            continue
        if key in LayerPlan.__dataclass_fields__:
            trim[key] = value
        else:
            data[key] = value
    required = ("net", "weights", "baseline_solver", "finetune_solver", "out", "iterations")
    missing = [key for key in required if key not in data]
    if missing or "layers" not in trim:
        raise ValueError(f"{path}: missing keys: {', '.join(missing + ([] if 'layers' in trim else ['trim.layers']))}")
    known = set(Schedule.__dataclass_fields__) - {"plan", "overrides"}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{path}: unknown keys: {', '.join(sorted(unknown))}")
    try:
        plan = LayerPlan(**trim)
    except TypeError as exc:
        raise ValueError(f"{path}: [trim]: {exc}") from None
    per_iteration = {int(entry.pop("number")): entry for entry in iterations}
    paths = {key: resolve(data[key]) for key in ("net", "weights", "baseline_solver", "finetune_solver")}
    paths["out"] = Path(data["out"])
    return Schedule(
        **paths,
        deploy=resolve(data["deploy"]) if data.get("deploy") else None,
        iterations=int(data["iterations"]),
        plan=plan,
        overrides=per_iteration,
        tolerance=float(data.get("tolerance", 0.2)),
        stats_limit=int(data["stats_limit"]) if data.get("stats_limit") else None,
        scratch=bool(data.get("scratch", True)),
        scratch_iters=int(data["scratch_iters"]) if data.get("scratch_iters") else None,
        name=str(data.get("name", path.stem)),
    )


def widths(net_path: str | Path) -> list[int]:
    """num_output of every Convolution/InnerProduct layer, in order (each name once)."""
    seen, result = set(), []
    for layer in read_net(net_path).layer:
        if layer.type in TRIMMABLE and layer.name not in seen:
            seen.add(layer.name)
            result.append(num_output(layer))
    return result


def widths_text(values: list[int]) -> str:
    return "-".join(str(v) for v in values)


def run_tool(script: str, args: list[str], step: str) -> dict[str, Any]:
    """Run tools/<script> in a child process; return its JSON output (last stdout line)."""
    env = dict(os.environ)
    env.setdefault("GLOG_minloglevel", "2")
    child = subprocess.run(
        [sys.executable, str(TOOLS / script), *args], capture_output=True, text=True, env=env, check=False
    )
    if child.returncode != 0:
        how = f"was killed by signal {-child.returncode}" if child.returncode < 0 else f"exit code {child.returncode}"
        tail = "\n  ".join((child.stderr or child.stdout).strip().splitlines()[-8:])
        raise StepFailed(f"step {step} failed ({script} {how}):\n  {tail}")
    text = child.stdout.strip()
    if not text:
        return {}
    try:
        return json.loads(text)  # the tools' --json output
    except json.JSONDecodeError:
        lines = [line for line in text.splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {"stdout": text}


class Loop:
    """Runs a schedule step by step, saving state after each step."""

    def __init__(self, schedule: Schedule, progress: bool = True, log=print) -> None:
        self.s = schedule
        self.progress = progress
        self.log = log
        self.state_path = schedule.out / "state.json"
        self.state: dict[str, Any] = {"schedule": schedule.name, "baseline": {}, "iterations": [], "scratch": {}}
        if self.state_path.is_file():
            self.state = json.loads(self.state_path.read_text())

    # --- state -------------------------------------------------------------------------
    def save(self) -> None:
        self.s.out.mkdir(parents=True, exist_ok=True)
        partial = self.state_path.with_name("state.json.partial")
        partial.write_text(json.dumps(self.state, indent=1) + "\n")
        partial.replace(self.state_path)

    def step(self, record: dict[str, Any], name: str, fn, files: list[Path] = ()) -> Any:  # type: ignore[assignment]
        """Run `fn` unless `record[name]` is done and its files exist; record its result."""
        if name in record and all(Path(f).exists() for f in files):
            return record[name]
        start = time.monotonic()
        result = fn()
        record[name] = result
        record.setdefault("seconds", {})[name] = round(time.monotonic() - start, 2)
        self.save()
        return result

    # --- steps -----------------------------------------------------------------------------
    def evaluate(self, net: Path, weights: Path) -> dict[str, Any]:
        return run_tool(
            "evaluate.py", ["--net", str(net), "--weights", str(weights), "--json", "--quiet"], f"evaluate {weights}"
        )

    def baseline(self) -> dict[str, Any]:
        s, record = self.s, self.state["baseline"]
        if not s.weights.is_file():
            self.log(f"baseline: {s.weights} missing, training it with {s.baseline_solver}")
            self.step(record, "train", lambda: self.train(s.baseline_solver, s.net, s.weights, None, None), [s.weights])
        digest = sha256_file(s.weights)
        if record.setdefault("weights_sha256", digest) != digest:
            raise StepFailed(
                f"{self.state_path} belongs to a run from other baseline weights than {s.weights}: "
                "start over with --restart (or use another --out)"
            )
        acc = self.step(record, "evaluate", lambda: self.evaluate(s.net, s.weights))
        record.update(
            widths=widths_text(widths(s.net)),
            params=count_params(s.weights),
            top1=acc["top1"],
            top5=acc["top5"],
        )
        self.save()
        self.log(f"baseline: {record['widths']}, {record['params']:,} parameters, top-1 {record['top1']:.2%}")
        return record

    def train(self, solver: Path, net: Path, out: Path, weights: Path | None, iters: int | None) -> dict[str, Any]:
        """Caffe's solver in a child process; on a NaN loss, retry with a 10x lower learning rate."""
        solver_param = read_solver(solver)
        base_lr = solver_param.base_lr
        for attempt in range(3):
            lr_solver = solver
            if attempt:
                solver_param.base_lr = base_lr * 0.1**attempt
                lr_solver = out.with_suffix(f".retry{attempt}.prototxt")
                from google.protobuf import text_format

                lr_solver.write_text(text_format.MessageToString(solver_param))
            try:
                result = train(
                    lr_solver,
                    out,
                    weights=weights,
                    max_iter=iters,
                    net_path=net,
                    workdir=out.with_suffix(".train"),
                    progress=self.progress,
                )
            except TrainingDiverged as exc:
                self.log(f"  training diverged ({exc}); retrying with base_lr {base_lr * 0.1 ** (attempt + 1):g}")
                continue
            return {
                "iterations": result.iterations,
                "final_loss": result.final_loss,
                "seconds": round(result.seconds, 1),
                "base_lr": solver_param.base_lr,
                "log": str(result.log),
            }
        raise StepFailed(f"training {out} diverged three times (log in {out.with_suffix('.train')})")

    def iteration(self, number: int, net: Path, deploy: Path | None, weights: Path) -> dict[str, Any] | None:
        """One trimming iteration; returns its record, or None when nothing is left to trim."""
        s = self.s
        plan = s.plan_for(number)
        folder = s.out / f"iter-{number:02d}"
        while len(self.state["iterations"]) < number:
            self.state["iterations"].append({"iteration": len(self.state["iterations"]) + 1})
        record = self.state["iterations"][number - 1]
        record["layers"] = plan.layers
        stats_file = folder / "stats.h5"

        def collect_step() -> dict[str, Any]:
            args = [
                "--net",
                str(net),
                "--weights",
                str(weights),
                "--out",
                str(stats_file),
                "--plots",
                str(folder),
                "--json",
                "--quiet",
            ]
            if s.stats_limit:
                args += ["--limit", str(s.stats_limit)]
            return run_tool("collect.py", args, f"collect (iteration {number})")

        collected = self.step(record, "collect", collect_step, [stats_file])
        record["mean_apoz"] = {name: v["mean"] for name, v in collected["layers"].items()}

        def select_step() -> dict[str, Any]:
            stats = load_stats(stats_file)
            scores = {name: layer.apoz for name, layer in stats.layers.items()}
            if plan.criterion != "apoz":  # another unit criterion, scored in a child process
                args = [
                    "--net",
                    str(net),
                    "--weights",
                    str(weights),
                    "--criterion",
                    plan.criterion,
                    "--layers",
                    ",".join(plan.layers),
                    "--out",
                    str(folder / "scores.npz"),
                ]
                if s.stats_limit:
                    args += ["--limit", str(s.stats_limit)]
                run_tool("score.py", args, f"score with {plan.criterion} (iteration {number})")
                with np.load(folder / "scores.npz") as stored:
                    scores = {name: stored[name] for name in stored.files}
            chosen = {}
            for layer in plan.layers:
                if layer not in scores:
                    raise StepFailed(f"iteration {number}: no statistics for layer {layer!r}")
                chosen[layer] = choose(layer, scores[layer], plan.rule_for(layer)).to_json()
            write_atomic(
                folder / "selection.json",
                json.dumps(
                    {"weights_sha256": stats.weights_sha256, "layers": list(chosen.values())}, indent=1
                ).encode(),
            )
            return {name: {"width": c["width"], "kept": c["kept"]} for name, c in chosen.items()}

        chosen = self.step(record, "select", select_step, [folder / "selection.json"])
        if all(c["kept"] == c["width"] for c in chosen.values()):
            self.log(f"iteration {number}: no neuron is above the threshold; nothing left to trim")
            self.state["iterations"].pop()
            self.save()
            return None
        selections = {
            e["layer"]: Selection.from_json(e) for e in json.loads((folder / "selection.json").read_text())["layers"]
        }
        new_net, new_deploy = folder / "train_val.prototxt", folder / "deploy.prototxt"
        trimmed = folder / "trimmed.caffemodel"

        def cut_step() -> dict[str, Any]:
            nets, outs = [net], [new_net]
            if deploy is not None:
                nets.append(deploy)
                outs.append(new_deploy)
            result = cut(nets, weights, selections, outs, trimmed)
            return {"params": result.params_after, "widths": result.widths_after}

        cut_result = self.step(record, "cut", cut_step, [new_net, trimmed])

        def verify_step() -> dict[str, Any]:
            args = [
                "--net",
                str(net),
                "--weights",
                str(weights),
                "--trimmed-net",
                str(new_net),
                "--trimmed-weights",
                str(trimmed),
                "--selection",
                str(folder / "selection.json"),
                "--json",
            ]
            try:
                return run_tool("verify.py", args, f"verify (iteration {number})")
            except StepFailed as exc:
                raise StepFailed(f"{exc}\n  the cut of iteration {number} is rejected") from None

        verified = self.step(record, "verify", verify_step)
        evaluated = self.step(record, "evaluate_trimmed", lambda: self.evaluate(new_net, trimmed))
        retrained = folder / "retrained.caffemodel"
        if plan.finetune_iters > 0:
            self.step(
                record,
                "retrain",
                lambda: self.train(s.finetune_solver, new_net, retrained, trimmed, plan.finetune_iters),
                [retrained],
            )
            final = self.step(record, "evaluate_retrained", lambda: self.evaluate(new_net, retrained))
        else:  # a width plan applied without retraining: the trimmed net is the result
            if not retrained.exists():
                os.link(trimmed, retrained)
            record["retrain"] = {"skipped": True}
            final = evaluated
        record.update(
            widths=widths_text(widths(new_net)),
            params=cut_result["params"],
            compression=self.state["baseline"]["params"] / cut_result["params"],
            top1_trimmed=evaluated["top1"],
            top5_trimmed=evaluated["top5"],
            top1_retrained=final["top1"],
            top5_retrained=final["top5"],
            verify_max_relative_diff=verified.get("max_relative_diff"),
        )
        self.save()
        self.log(
            f"iteration {number}: {record['widths']}, {record['params']:,} parameters "
            f"({record['compression']:.2f}x), top-1 {record['top1_trimmed']:.2%} after the cut, "
            f"{record['top1_retrained']:.2%} after retraining"
        )
        return record

    def scratch(self, net: Path) -> dict[str, Any]:
        """The ablation: the final widths trained from scratch with the baseline's recipe."""
        s, record = self.s, self.state["scratch"]
        out = s.out / "scratch" / "scratch.caffemodel"
        iters = s.scratch_iters or read_solver(s.baseline_solver).max_iter
        record["net"] = str(net)
        self.step(record, "train", lambda: self.train(s.baseline_solver, net, out, None, iters), [out])
        acc = self.step(record, "evaluate", lambda: self.evaluate(net, out))
        record.update(widths=widths_text(widths(net)), params=count_params(out), top1=acc["top1"], iterations=iters)
        self.save()
        self.log(f"from scratch: {record['widths']}, top-1 {record['top1']:.2%} after {iters} iterations")
        return record

    def run(self) -> dict[str, Any]:
        s = self.s
        # Old-format (V0/V1) inputs are upgraded with Caffe's tools (and the loop says so).
        s.net, s.deploy = current_format(s.net, "net", self.log), current_format(s.deploy, "net", self.log)
        if s.weights.is_file():
            s.weights = current_format(s.weights, "weights", self.log)
        base = self.baseline()
        net, deploy, weights = s.net, s.deploy, s.weights
        accepted = 0
        for number in range(1, s.iterations + 1):
            record = self.iteration(number, net, deploy, weights)
            if record is None:
                break
            folder = s.out / f"iter-{number:02d}"
            if record["top1_retrained"] < base["top1"] - s.tolerance / 100:
                record["stopped"] = (
                    f"top-1 {record['top1_retrained']:.2%} is below the baseline minus {s.tolerance} points"
                )
                self.log(f"stop: {record['stopped']}; the result is iteration {accepted}")
                self.save()
                break
            accepted = number
            net, weights = folder / "train_val.prototxt", folder / "retrained.caffemodel"
            deploy = folder / "deploy.prototxt" if s.deploy else None
        self.state["final_iteration"] = accepted
        self.save()
        if s.scratch and accepted:
            self.scratch(net)
        return self.state


def final_record(state: dict[str, Any]) -> dict[str, Any]:
    """The accepted result: the last iteration within tolerance, or the baseline."""
    accepted = state.get("final_iteration", 0)
    return state["iterations"][accepted - 1] if accepted else state["baseline"]


def compression(base_params: int, params: int) -> float:
    return base_params / params if params else math.inf
