"""Torch-Pruning on the twins: a step reaches its MACs target without touching the classifier,
a whole job (one step, a short fine-tuning) runs as bench-peers runs it, and the ONNX file of
a pruned twin gives its outputs in ONNX Runtime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from finetune import scores
from latency import export, session, time_onnx
from peers import load_split
from prune import IMPORTANCES, gradients, prune_to
from twin import caffe_params, load_twin, macs

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("name", ["lenet", "resnet_fm", "mobilenet_fm", "squeezenet_fm"])
@pytest.mark.parametrize("importance", sorted(IMPORTANCES))
def test_a_step_reaches_its_target_and_keeps_the_classifier(fixtures: dict[str, Any], name: str,
                                                            importance: str) -> None:  # fmt: skip
    entry = fixtures["nets"][name]
    twin = load_twin(entry["twin"])
    shape, base = twin.spec["input"]["shape"], macs(load_twin(entry["twin"]), twin.spec["input"]["shape"])
    test = load_split(entry["test"])
    grads = gradients(twin, test["images"], test["labels"], 50) if importance == "taylor" else None
    if importance == "bn_scale" and name == "lenet":  # no BatchNorm: nothing to score (bench-peers leaves it out)
        with pytest.raises(ValueError, match="bn_scale prunes"):
            prune_to(twin, importance, 0.6 * base, grads, seed=0)
        return
    pruned, fraction = prune_to(twin, importance, 0.6 * base, grads, seed=0)
    assert 0.6 * base * 0.8 < macs(pruned, shape) <= 0.6 * base and 0 < fraction < 0.95
    assert caffe_params(pruned) < caffe_params(twin) and macs(twin, shape) == base  # the original is untouched
    for original, cut in zip(twin.classifier(), pruned.classifier(), strict=True):
        out = "out_channels" if isinstance(original, torch.nn.Conv2d) else "out_features"
        inner = original if out == "out_channels" else original.linear
        kept = cut if out == "out_channels" else cut.linear
        assert getattr(kept, out) == getattr(inner, out)  # class scores stay: the classifier is never pruned
    assert scores(pruned, test["images"][:20]).shape == (20, 10)


def run_job(job: dict[str, Any], folder: Path) -> dict[str, Any]:
    (folder / "job.json").write_text(json.dumps(job))
    done = subprocess.run([sys.executable, str(HERE.parent / "peers.py"), "prune", "--job", str(folder / "job.json")],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((folder / "result.json").read_text())


def test_a_job_prunes_fine_tunes_keeps_the_better_and_resumes(fixtures: dict[str, Any], tmp_path: Path) -> None:
    entry, data = fixtures["nets"]["lenet"], fixtures["data"]
    base = macs(load_twin(entry["twin"]), [1, 28, 28])
    budget = entry["budget"] | {"iterations": 10, "max_iter": 10, "images_seen": 10 * entry["budget"]["batch"]}
    job = {"twin": entry["twin"], "importance": "l2", "seed": 0, "out": str(tmp_path), "keep_models": [1, 2],
           "data": {"train": f"{data}/train.npz", "val": f"{data}/test.npz", "test": f"{data}/test.npz",
                    "criterion": f"{data}/test.npz"},
           "steps": [{"target_macs": share * base, "budget": budget} for share in (0.5, 0.4)]}  # fmt: skip
    result = run_job(job, tmp_path)
    step, second = result["steps"]
    assert result["done"] and step["macs"] <= 0.5 * base and second["macs"] <= 0.4 * base and step["budget"] == budget
    assert step["kept"] == ("finetuned" if step["val_top1_finetuned"] >= step["val_top1_pruned"] else "pruned")
    assert step["test_top1"] == step[f"test_top1_{step['kept']}"]
    with np.load(tmp_path / "test-01.npz") as stored:
        assert stored["correct"].mean() == pytest.approx(step["test_top1"])
    model = torch.load(tmp_path / "step-01.pt", weights_only=False)
    assert macs(model, [1, 28, 28]) == step["macs"] and not (tmp_path / "last.pt").exists()
    # Interrupted after step 1: the run resumes there and computes step 2 as it did.
    (tmp_path / "last.pt").write_bytes((tmp_path / "step-01.pt").read_bytes())
    (tmp_path / "result.json").write_text(json.dumps({"steps": [step], "done": False, "job": job}))
    again = run_job(job, tmp_path)
    timing = ("prune_seconds", "finetune_seconds", "seconds_so_far", "cpu_seconds_so_far")
    assert again["steps"][0] == step and {k: v for k, v in again["steps"][1].items() if k not in timing} == {
        k: v for k, v in second.items() if k not in timing
    }


def test_the_onnx_of_a_pruned_twin_gives_its_outputs(fixtures: dict[str, Any], tmp_path: Path) -> None:
    entry = fixtures["nets"]["resnet_fm"]
    twin = load_twin(entry["twin"])
    pruned, _ = prune_to(twin, "l2", 0.5 * macs(twin, [1, 28, 28]), None, seed=0)
    images = load_split(entry["test"])["images"][:8]
    path = export(pruned, 8, tmp_path / "pruned.onnx")
    run = session(path)
    x = torch.from_numpy(images).float().numpy() * twin.spec["input"]["scale"]
    mine = run.run(None, {run.get_inputs()[0].name: x})[0]
    assert np.abs(mine - scores(pruned, images)).max() <= 1e-4 * np.abs(mine).max()
    timed = time_onnx([export(twin, 8, tmp_path / "base.onnx"), path], 3, 8)
    assert timed["ratio"][0] == 1.0 and all(s > 0 for s in timed["seconds"])
