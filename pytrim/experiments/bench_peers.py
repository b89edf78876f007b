"""Benchmark: pytrim and Torch-Pruning on the same nets, data and budget (runs/bench/peers.json).

Per net: pytrim's loop as `make <net>-trim` runs it (its schedule; shortened by --iterations
and --finetune-iters), then Torch-Pruning (in .venv-peers, tools/peers/) on a PyTorch twin of
the same baseline, checked against Caffe's scores first. Torch-Pruning prunes in as many
steps as pytrim's result took iterations, step i to the MACs pytrim's iteration i reached,
then one step further (to pytrim's next iteration, or by the last step's ratio once more);
each step is fine-tuned with pytrim's budget of that iteration (solver iterations, TRAIN
batch, base_lr and lr policy, momentum, weight decay, per-blob multipliers, Caffe's update
rule, the training images in Caffe's order) and keeps the better, on the validation split,
of the pruned and the fine-tuned weights, as pytrim's loop does. Test top-1 is paired image
by image with Caffe's baseline. Last, ONNX Runtime times the original and pruned nets
(one thread, batch 1 and 8), interleaved.

The folder <out's folder>/peers/<net>/ keeps everything: pytrim's run folder (its keyed state:
a second run reuses its steps), the twin files, every Torch-Pruning job and its result (a
job whose file and result are unchanged is not run again).
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytrim.caffeio.env import pinned_machine
from pytrim.caffeio.netcheck import probe
from pytrim.caffeio.proto import read_net
from pytrim.core.errors import BadInput, StepFailed
from pytrim.core.files import provenance, read_json, shipped, write_json
from pytrim.core.runner import run_child, run_step
from pytrim.experiments import peers_files as files
from pytrim.experiments import peers_report as report
from pytrim.feeds.source import data_source
from pytrim.loop.driver import run_schedule
from pytrim.loop.report import write as write_report
from pytrim.loop.schedule import Schedule, load_schedule
from pytrim.retrain.solver import train_baseline

NETS = {
    "lenet": "prototxt/lenet/trim.toml",
    "resnet_fm": "prototxt/resnet_fm/trim.toml",
    "mobilenet_fm": "prototxt/mobilenet_fm/trim.toml",
    "squeezenet_fm": "prototxt/squeezenet_fm/trim.toml",
}
CRITERIA = ("l2", "taylor", "bn_scale", "random")
PEERS = "tools/peers/peers.py"
ONNX_BATCHES = (1, 8)


@dataclass
class Bench:
    """What one bench-peers run compares, and where it keeps its files."""

    nets: list[str]
    seeds: list[int]
    criteria: list[str]
    python: Path  # the interpreter of .venv-peers
    folder: Path  # runs/bench/peers
    finetune_iters: int | None = None
    iterations: int | None = None
    jobs: int = 2
    repeats: int = 7
    progress: bool = False
    log: Callable[[str], None] = print
    written: set[str] = field(default_factory=set)  # image arrays written in this run


def torch_side(bench: Bench, command: str, args: list[str], log: Path, what: str) -> None:
    """tools/peers/peers.py in the torch environment, one thread."""
    if not bench.python.is_file():
        raise BadInput(f"the torch environment's Python {bench.python} is missing: make .venv-peers")
    run_child([str(bench.python), str(shipped(PEERS)), command, *args], log, what, env={"PEERS_THREADS": "1"})


def images(bench: Bench, schedule: Schedule) -> dict[str, str]:
    """The training, validation and test images of a schedule as arrays (written once per run)."""
    train = files.budget(schedule.finetune_solver, schedule.net, 1, None)["train_source"]
    test = data_source(read_net(schedule.net)).source
    sources = {"train": Path(train), "val": schedule.val_data or Path(test), "test": Path(test)}
    out = {}
    for split, source in sources.items():
        path = bench.folder / "data" / f"{source.resolve().name}.npz"
        if str(path) not in bench.written:
            files.write_images(source, path)
            bench.written.add(str(path))
        out[split] = str(path)
    out["criterion"] = out["val"] if schedule.stats_data == schedule.val_data else out["test"]
    return out


def pytrim_run(bench: Bench, name: str) -> tuple[Schedule, dict[str, Any], dict[str, Any]]:
    """pytrim's loop on `name`'s schedule in the bench's folder: its state, report and wall time
    (the baseline, trained first where missing, is not part of it; neither are the
    from-scratch ablation and the accuracy curves, which change no weight of the result)."""
    schedule = load_schedule(shipped(NETS[name]), out=str(bench.folder / name / "pytrim"), scratch=False,
                             curve_every=0, finetune_iters=bench.finetune_iters,
                             iterations=bench.iterations)  # fmt: skip
    if not schedule.weights.is_file() and schedule.train_missing_weights:
        train_baseline(schedule.baseline_solver, schedule.weights, schedule.net, bench.log)
    resumed, start, cpu = (schedule.out / "state.json").is_file(), time.monotonic(), children_cpu()
    state = run_schedule(schedule, bench.progress, bench.log, jobs=bench.jobs)
    spent = {"seconds": time.monotonic() - start, "cpu_seconds": children_cpu() - cpu}
    loop = write_report(state, schedule, f"Network Trimming: {schedule.name}")
    return schedule, state, loop_time(schedule.out.parent / "pytrim-time.json", spent, resumed) | loop


def loop_time(path: Path, spent: dict[str, float], resumed: bool) -> dict[str, Any]:
    """The loop's time over every run that built its folder (a resumed or reused run adds what
    it spent to what the runs before it spent), and this run's own."""
    before = read_json(path, "loop time") if resumed and path.is_file() else {"seconds": 0.0, "cpu_seconds": 0.0}
    total = {key: before[key] + spent[key] for key in ("seconds", "cpu_seconds")}
    write_json(path, total)
    return total | {"this_run_seconds": spent["seconds"], "resumed": resumed}


def children_cpu() -> float:
    """CPU seconds (user and system) of this process's finished children: on a busy machine
    what a run costs, where its wall time says how busy the machine was."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def twin(bench: Bench, name: str, tag: str, net: Path, weights: Path, data: dict[str, str]) -> dict[str, Any]:
    """The twin of one Caffe net (spec, weights, Caffe's scores) and its check against Caffe."""
    folder = bench.folder / name / "twin"
    prefix = folder / tag
    spec = files.write_twin(net, weights, prefix)
    scores = files.write_caffe_scores(net, weights, folder / f"{tag}-caffe.npz")
    result = folder / f"{tag}-check.json"
    args = ["--twin", str(prefix), "--caffe", scores["path"], "--test", data["test"], "--val", data["val"]]
    try:
        torch_side(bench, "check", [*args, "--out", str(result)], folder / f"{tag}-check.log", f"the twin of {net}")
    except StepFailed as exc:
        found = read_json(result, "twin check") if result.is_file() else {}
        raise StepFailed(f"the twin of {net} does not give Caffe's scores: {found or exc}") from None
    return {"prefix": str(prefix), "spec": spec, "caffe": scores, **read_json(result, "twin check"),
            "test_correct": str(result.with_suffix(".test.npz"))}  # fmt: skip


def budgets(schedule: Schedule, state: dict[str, Any], steps: int) -> list[dict[str, Any]]:
    """The fine-tuning budget of each of `steps` iterations, as pytrim's loop ran it (its
    iterations and base_lr, a lowered rate after a diverged run included) or would run it."""
    out = []
    for number in range(1, steps + 1):
        plan = schedule.plan_for(number)
        ran = state["iterations"][number - 1] if number <= len(state["iterations"]) else {}
        retrain = ran.get("steps", {}).get("retrain", {}).get("result", {})
        lr = retrain.get("base_lr") or plan.finetune_lr
        out.append(files.budget(schedule.finetune_solver, schedule.net, plan.finetune_iters, lr))
    return out


def targets(loop: dict[str, Any], base_macs: int) -> tuple[list[float], int]:
    """Torch-Pruning's MACs targets: pytrim's iterations up to its result, then one further
    (pytrim's next iteration, or the last step's ratio once more); and the matched step."""
    done, matched = loop["iterations"], loop["final"]["iteration"]
    ratios = [it["cost"]["macs_ratio"] for it in done[:matched]]
    if matched < len(done):
        ratios.append(done[matched]["cost"]["macs_ratio"])
    else:
        last = ratios[-1] if ratios else 1.0
        before = ratios[-2] if len(ratios) > 1 else 1.0
        ratios.append(last * last / before)
    return [base_macs / r for r in ratios], matched


def job_of(bench: Bench, name: str, twin_of: dict, data: dict, plan: dict, criterion: str, seed: int) -> Path:
    """A Torch-Pruning job's file (rewritten only when it changes: an unchanged finished job
    is reused)."""
    out = bench.folder / name / "torch-pruning" / f"{criterion}-seed{seed}"
    steps = [{"target_macs": t, "budget": b} for t, b in zip(plan["targets"], plan["budgets"], strict=True)]
    job = {"twin": twin_of["prefix"], "data": data, "importance": criterion, "seed": seed, "steps": steps,
           "keep_models": sorted({plan["matched"], len(steps)} - {0}), "out": str(out)}  # fmt: skip
    path = out / "job.json"
    if not path.is_file() or json.loads(path.read_text()) != job:
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").unlink(missing_ok=True)  # another job: nothing of the old one is resumed
        write_json(path, job)
    return path


def run_jobs(bench: Bench, jobs: list[Path]) -> list[dict[str, Any]]:
    """Every job not finished yet, `bench.jobs` at once (one thread each); their results."""

    def one(path: Path) -> dict[str, Any]:
        result = path.parent / "result.json"
        if not (result.is_file() and read_json(result, "job result").get("done")):
            bench.log(f"torch-pruning: {path.parent.name} of {path.parent.parent.parent.name}")
            torch_side(bench, "prune", ["--job", str(path)], path.parent / "prune.log", f"torch-pruning {path}")
        return read_json(result, "job result") | {"folder": str(path.parent)}

    with ThreadPoolExecutor(max_workers=max(1, bench.jobs)) as pool:
        return list(pool.map(one, jobs))


def one_net(bench: Bench, name: str) -> dict[str, Any]:
    """pytrim and Torch-Pruning on one net, everything but the latency."""
    schedule, state, loop = pytrim_run(bench, name)
    data = images(bench, schedule)
    base = twin(bench, name, "baseline", schedule.net, schedule.weights, data)
    final, trimmed = loop["final"]["iteration"], {}
    for tag, number in (("pytrim", final), ("pytrim-next", final + 1)):  # pytrim's nets as twins too
        if 1 <= number <= len(state["iterations"]) and "weights" in state["iterations"][number - 1]:
            weights = Path(state["iterations"][number - 1]["weights"])
            trimmed[tag] = twin(bench, name, tag, weights.parent / "train_val.prototxt", weights, data)
    plan_targets, matched = targets(loop, base["spec"]["macs"])
    plan = {"targets": plan_targets, "matched": matched, "budgets": budgets(schedule, state, len(plan_targets))}
    has_bn = any(layer["type"] == "BatchNorm" for layer in base["spec"]["layers"])
    chosen = [c for c in bench.criteria if c != "bn_scale" or has_bn]
    jobs = [job_of(bench, name, base, data, plan, c, s) for c in chosen for s in bench.seeds]
    results = run_jobs(bench, jobs)
    return {"net": name, "schedule": str(shipped(NETS[name])), "loop": loop, "state_baseline": state["baseline"],
            "state_iterations": state["iterations"], "twin": base, "pytrim_twins": trimmed, "plan": plan,
            "results": results, "deploy": str(schedule.deploy), "weights": str(schedule.weights)}  # fmt: skip


def pytrim_onnx(folder: Path, tag: str, deploy: Path, weights: Path) -> dict[str, str] | None:
    """pytrim's own ONNX export (`pytrim export`, its batch dimension dynamic) of a deploy net,
    the file for every batch size; None where this pytrim has no export command."""
    onnx = folder / f"{tag}.onnx"
    onnx.unlink(missing_ok=True)
    try:
        run_step("export", ["--net", str(deploy), "--weights", str(weights), "--out", str(onnx)],
                 folder / f"{tag}-export.log", f"pytrim export of {deploy}")  # fmt: skip
    except StepFailed as exc:
        if "unknown command" in (exc.reason or str(exc)):
            return None
        raise
    return {str(batch): str(onnx) for batch in ONNX_BATCHES}


def latency_nets(bench: Bench, net: dict[str, Any], folder: Path) -> dict[str, list[dict[str, Any]]]:
    """What is timed: the twins (baseline, pytrim's result, every distinct Torch-Pruning net,
    exported with torch.onnx) and pytrim's own export of its baseline, result and next iteration."""
    twins = [{"name": "baseline", "twin": net["twin"]["prefix"]}]
    twins += [{"name": tag, "twin": found["prefix"]} for tag, found in net["pytrim_twins"].items()]
    seen: dict[str, str] = {}
    for result in net["results"]:
        for step in result["steps"]:
            model = Path(result["folder"]) / f"step-{step['step']:02d}.pt"
            shape = json.dumps(step["widths"], sort_keys=True)
            if model.is_file() and shape not in seen:
                seen[shape] = f"{result['importance']}-{step['step']}"
                twins.append({"name": seen[shape], "model": str(model), "widths": step["widths"]})
    groups = {"twin": twins}
    final, iterations = net["loop"]["final"]["iteration"], net["state_iterations"]
    exported = [("baseline", Path(net["deploy"]), Path(net["weights"]))]
    for tag, number in (("pytrim", final), ("pytrim-next", final + 1)):
        if 1 <= number <= len(iterations) and "weights" in iterations[number - 1]:
            weights = Path(iterations[number - 1]["weights"])
            exported.append((tag, weights.parent / "deploy.prototxt", weights))
    onnx = [(tag, pytrim_onnx(folder, tag, deploy, weights)) for tag, deploy, weights in exported]
    if all(files_of is not None for _, files_of in onnx):
        groups["pytrim"] = [{"name": tag, "onnx": files_of} for tag, files_of in onnx]
    return groups


def latency(bench: Bench, net: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """ONNX Runtime latency ratios (original / pruned, batch 1 and 8) of every net of a run:
    "pytrim" and "pytrim-next" (pytrim export, when there is one), "pytrim-twin" and
    "pytrim-next-twin" (their twins through torch.onnx), "<importance>-<step>" for
    Torch-Pruning's nets."""
    folder = bench.folder / net["net"] / "latency"
    folder.mkdir(parents=True, exist_ok=True)
    groups = latency_nets(bench, net, folder)
    job = {"folder": str(folder), "batches": list(ONNX_BATCHES), "repeats": bench.repeats, "groups": groups,
           "out": str(folder / "latency.json")}  # fmt: skip
    write_json(folder / "job.json", job)
    bench.log(f"{net['net']}: ONNX Runtime latency of {sum(len(g) for g in groups.values())} nets")
    torch_side(bench, "latency", ["--job", str(folder / "job.json")], folder / "latency.log", "the latency")
    timed = read_json(folder / "latency.json", "latency")["groups"]
    found = {f"{name}-twin" if name.startswith("pytrim") else name: entry for name, entry in timed["twin"].items()}
    for name, entry in timed.get("pytrim", {}).items():
        found[name] = entry
    for result in net["results"]:  # every Torch-Pruning net has the latency of its widths
        for step in result["steps"]:
            same = next((t["name"] for t in groups["twin"] if t.get("widths") == step["widths"]), None)
            if same:
                found[f"{result['importance']}-{step['step']}"] = timed["twin"][same]
    return found


def result(bench: Bench, measured: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """peers.json: the rows, the verdicts, per net its twin checks, plan and budgets."""
    rows, verdicts, nets = [], [], []
    for net in measured:
        found, judged = report.net_rows(net)
        rows += found
        verdicts += judged
        checks = ("max_abs_diff", "max_rel_diff", "argmax_disagreements", "within_tolerance", "macs", "params", "top1")
        nets.append({"net": net["net"], "schedule": net["schedule"], "twin": {k: net["twin"][k] for k in checks},
                     "pytrim_twins": {tag: {k: t[k] for k in checks} for tag, t in net["pytrim_twins"].items()},
                     "baseline_top1": net["state_baseline"]["top1"], "plan": net["plan"],
                     "budgets_equal": report.budgets_equal(net), "pytrim_seconds": net["loop"]["seconds"],
                     "pytrim_resumed": net["loop"]["resumed"], "pytrim_report": net["loop"]})  # fmt: skip
    return {"rows": rows, "verdicts": verdicts, "nets": nets, "seeds": bench.seeds, "criteria": bench.criteria,
            "finetune_iters": bench.finetune_iters, "iterations": bench.iterations, "seconds": seconds,
            "jobs": bench.jobs, "torch_threads": 1, "onnx_batches": list(ONNX_BATCHES), "repeats": bench.repeats,
            "machine": pinned_machine(), "level_within_stderr": report.LEVEL_SE,
            "provenance": provenance()}  # fmt: skip


def bench_peers(bench: Bench) -> dict[str, Any]:
    """Every net, then the latencies (alone on the machine), then the table."""
    start, measured = time.monotonic(), []
    for name in bench.nets:
        bench.log(f"{name}: pytrim's loop, the twin, Torch-Pruning ({', '.join(bench.criteria)}; "
                  f"seeds {','.join(map(str, bench.seeds))})")  # fmt: skip
        measured.append(one_net(bench, name))
    for net in measured:
        net["latency"] = latency(bench, net)
    return result(bench, measured, time.monotonic() - start)


def check_nets(names: list[str]) -> None:
    """Every net's schedule and prototxts are there (before anything runs)."""
    for name in names:
        schedule = load_schedule(shipped(NETS[name]))
        probe(schedule.net)
