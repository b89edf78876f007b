#!/usr/bin/env python3
"""The Torch-Pruning side of `pytrim bench-peers`, run with .venv-peers/bin/python.

    check    the twin of a Caffe net against Caffe's own class scores on the test images
    prune    one Torch-Pruning run: steps to MACs targets, each fine-tuned as Caffe would
    latency  ONNX Runtime forward times of original and pruned nets, interleaved

Each reads the files pytrim's side wrote (twin spec and weights, image arrays, a job JSON)
and writes JSON (and npz, .pt, .onnx) for it to read back: the two environments share
files, never imports. A problem is one `error:` line and exit code 1.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from finetune import correct, finetune, scores, stream
from latency import export, time_onnx
from prune import gradients, prune_to, widths
from twin import caffe_params, load_twin, macs, multipliers

TOLERANCE = 1e-4


def write_json(path: Path, value: Any) -> None:
    """Written under a temporary name and renamed: never half-written."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=1))
    os.replace(partial, path)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    partial = path.with_name(path.stem + ".partial.npz")
    np.savez(partial, **arrays)
    os.replace(partial, path)


def load_split(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as stored:
        return {"images": stored["images"], "labels": stored["labels"]}


def check(args: argparse.Namespace) -> dict[str, Any]:
    """The twin's scores against Caffe's: max absolute difference, and relative to the
    largest Caffe score; its MACs and parameters against pytrim's counts; its per-image
    correctness on the test (and validation) images."""
    twin = load_twin(args.twin)
    with np.load(args.caffe) as stored:
        caffe, labels = stored["scores"], stored["labels"]
    test = load_split(args.test)
    if not np.array_equal(test["labels"], labels):
        raise ValueError(f"{args.test} and {args.caffe} are not the same images")
    mine = scores(twin, test["images"])
    diff = float(np.abs(mine - caffe).max())
    found = {"max_abs_diff": diff, "max_rel_diff": diff / float(np.abs(caffe).max()), "tolerance": TOLERANCE,
             "argmax_disagreements": int((mine.argmax(1) != caffe.argmax(1)).sum()),
             "macs": macs(twin, twin.spec["input"]["shape"]), "params": caffe_params(twin),
             "pytrim_macs": twin.spec["macs"], "pytrim_params": twin.spec["params"], "images": len(labels),
             "top1": float(np.mean(mine.argmax(1) == labels)), "torch": torch.__version__}  # fmt: skip
    found["within_tolerance"] = found["max_rel_diff"] <= TOLERANCE
    found["counts_agree"] = found["macs"] == found["pytrim_macs"] and found["params"] == found["pytrim_params"]
    if args.val:
        save_npz(Path(args.out).with_suffix(".val.npz"), correct=correct(twin, load_split(args.val)))
    save_npz(Path(args.out).with_suffix(".test.npz"), correct=(mine.argmax(1) == labels).astype(np.float64))
    write_json(Path(args.out), found)
    if not found["within_tolerance"] or not found["counts_agree"]:
        raise ValueError(f"the twin of {args.twin} differs from Caffe: {json.dumps(found)}")
    return found


def step_record(model: Any, base_macs: int, base_params: int, target: float, fraction: float) -> dict[str, Any]:
    shape = model.spec["input"]["shape"]
    m, p = macs(model, shape), caffe_params(model)
    return {"target_macs": target, "macs": m, "params": p, "macs_ratio": base_macs / m, "params_ratio": base_params / p,
            "fraction": fraction, "widths": widths(model)}  # fmt: skip


def one_step(model: Any, job: dict[str, Any], number: int, splits: dict[str, Any]) -> tuple[Any, dict]:
    """Prune to the step's target, fine-tune with its budget, keep the better on validation.
    Every fine-tuning reads the training images from the start, as each of pytrim's
    retrainings (a new `caffe train`) does."""
    step, start, seed = job["steps"][number - 1], time.monotonic(), job["seed"]
    crit = splits["criterion"]
    grads = gradients(model, crit["images"], crit["labels"], 100) if job["importance"] == "taylor" else None
    pruned, fraction = prune_to(model, job["importance"], step["target_macs"], grads, seed * 1000 + number)
    record = step_record(pruned, job["base_macs"], job["base_params"], step["target_macs"], fraction)
    record |= {"step": number, "prune_seconds": time.monotonic() - start}
    before = {name: correct(pruned, splits[name]) for name in ("val", "test")}
    tuned, start = copy.deepcopy(pruned), time.monotonic()
    data = stream(splits["train"]["images"], splits["train"]["labels"], step["budget"]["batch"], seed)
    record["final_loss"] = finetune(tuned, multipliers(tuned), data, step["budget"])
    record["finetune_seconds"] = time.monotonic() - start
    after = {name: correct(tuned, splits[name]) for name in ("val", "test")}
    keep_tuned = after["val"].mean() >= before["val"].mean()  # pytrim keeps the cut weights only when better
    kept, chosen = (tuned, after) if keep_tuned else (pruned, before)
    record |= {"kept": "finetuned" if keep_tuned else "pruned", "val_top1": float(chosen["val"].mean()),
               "test_top1": float(chosen["test"].mean()), "val_top1_pruned": float(before["val"].mean()),
               "test_top1_pruned": float(before["test"].mean()), "val_top1_finetuned": float(after["val"].mean()),
               "test_top1_finetuned": float(after["test"].mean()), "budget": step["budget"]}  # fmt: skip
    save_npz(Path(job["out"]) / f"test-{number:02d}.npz", correct=chosen["test"])
    if number in job["keep_models"]:
        save_model(kept, Path(job["out"]) / f"step-{number:02d}.pt")
    return kept, record


def save_model(model: Any, path: Path) -> Path:
    partial = path.with_name(path.name + ".partial")
    torch.save(model, partial)
    os.replace(partial, path)
    return path


def resumed(job: dict[str, Any], model: Any) -> tuple[Any, list[dict[str, Any]]]:
    """The steps an interrupted run of this job finished (its result.json and the model it
    kept last), or none: a run resumes after its last finished step, exactly (every step
    seeds its own draws and reads the training images from the start)."""
    out = Path(job["out"])
    if not (out / "result.json").is_file() or not (out / "last.pt").is_file():
        return model, []
    done = json.loads((out / "result.json").read_text())
    if done.get("job") != job or done.get("done"):
        return model, []
    return torch.load(out / "last.pt", weights_only=False), done["steps"]


def prune(args: argparse.Namespace) -> dict[str, Any]:
    """A Torch-Pruning run: every step of the job in turn, each from the one before."""
    job = json.loads(Path(args.job).read_text())
    torch.manual_seed(job["seed"])
    model, records = resumed(job, load_twin(job["twin"]))
    base = load_twin(job["twin"])
    shape = base.spec["input"]["shape"]
    extra = {"base_macs": macs(base, shape), "base_params": caffe_params(base)}
    splits = {name: load_split(path) for name, path in job["data"].items()}
    start = time.monotonic() - (records[-1]["seconds_so_far"] if records else 0)
    cpu = time.process_time() - (records[-1]["cpu_seconds_so_far"] if records else 0)
    for number in range(len(records) + 1, len(job["steps"]) + 1):
        model, record = one_step(model, job | extra, number, splits)
        record |= {"seconds_so_far": time.monotonic() - start, "cpu_seconds_so_far": time.process_time() - cpu}
        records.append(record)
        save_model(model, Path(job["out"]) / "last.pt")
        write_json(Path(job["out"]) / "result.json", {"steps": records, "done": False, "job": job})
        print(f"step {number}: {record['macs_ratio']:.2f}x fewer MACs, test top-1 {record['test_top1']:.2%} "
              f"(kept {record['kept']}), {record['seconds_so_far']:.0f} s", flush=True)  # fmt: skip
    (Path(job["out"]) / "last.pt").unlink(missing_ok=True)
    result = {"steps": records, "done": True, "importance": job["importance"], "seed": job["seed"],
              "threads": torch.get_num_threads(), "torch": torch.__version__}  # fmt: skip
    write_json(Path(job["out"]) / "result.json", result)
    return result


def onnx_of(net: dict[str, Any], batch: int, folder: Path) -> Path:
    """A net's ONNX file at `batch`: given, or exported from its twin or saved model."""
    if "onnx" in net:
        return Path(net["onnx"][str(batch)])
    model = load_twin(net["twin"]) if "twin" in net else torch.load(net["model"], weights_only=False)
    return export(model, batch, folder / f"{net['name']}-b{batch}.onnx")


def latency(args: argparse.Namespace) -> dict[str, Any]:
    """Each group's nets timed interleaved with its first (the original), per batch size."""
    job = json.loads(Path(args.job).read_text())
    folder = Path(job["folder"])
    found: dict[str, Any] = {"batches": job["batches"], "repeats": job["repeats"], "groups": {}}
    for label, nets in job["groups"].items():
        entry: dict[str, Any] = {net["name"]: {} for net in nets}
        for batch in job["batches"]:
            timed = time_onnx([onnx_of(net, batch, folder) for net in nets], job["repeats"], batch)
            for net, seconds, ratio in zip(nets, timed["seconds"], timed["ratio"], strict=True):
                entry[net["name"]] |= {f"seconds_batch{batch}": seconds, f"ratio_batch{batch}": ratio}
        found["groups"][label] = entry
    write_json(Path(job["out"]), found)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(prog="peers.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    c = commands.add_parser("check", help="the twin against Caffe's scores")
    c.add_argument("--twin", required=True, help="the spec/weights prefix (PREFIX.json, PREFIX.npz)")
    c.add_argument("--caffe", required=True, help="Caffe's scores and labels (npz)")
    c.add_argument("--test", required=True, help="the test images (npz)")
    c.add_argument("--val", help="the validation images (npz): also the twin's per-image correctness on them")
    c.add_argument("--out", required=True, help="the result (JSON; per-image correctness beside it)")
    for name, what in (("prune", "a Torch-Pruning run"), ("latency", "ONNX Runtime timing")):
        sub = commands.add_parser(name, help=what)
        sub.add_argument("--job", required=True, help="the job (JSON) pytrim's side wrote")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("PEERS_THREADS", "1")))
    try:
        {"check": check, "prune": prune, "latency": latency}[args.command](args)
    except (ValueError, OSError, KeyError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
