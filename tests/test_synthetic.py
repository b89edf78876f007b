"""Any net end to end on filler weights: the full-size ResNet-50 of the model-zoo generator
(every trimmable channel group cut by a quarter, verified exact), and the VGG-16 command."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import ROOT, pytrim

from pytrim.caffeio.zoo import write


def test_full_size_resnet50_every_group_cut_and_verified(tmp_path: Path) -> None:
    (deploy,) = write("resnet50", tmp_path / "prototxt", ["deploy"])
    result = pytrim("synthetic", "--net", deploy, "--out", tmp_path / "run", "--images", "4", "--batch", "2",
                    "--quiet", "--result", tmp_path / "result.json")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "result.json").read_text())
    assert report == json.loads((tmp_path / "run/report.json").read_text())
    coverage = report["coverage"]
    assert (coverage["conv_ip_layers"], coverage["trimmable"]) == (54, 53)
    assert list(coverage["refused"]) == ["fc1000"] and "net's outputs" in coverage["refused"]["fc1000"]
    assert report["verify"]["ok"] and report["verify"]["exact"] and report["verify"]["max_relative_diff"] <= 1e-5
    assert set(report["steps"]) == {"weights", "collect", "choose", "cut", "verify", "train"}
    assert all(step["seconds"] > 0 and step["peak_rss_mb"] > 0 for step in report["steps"].values())
    assert report["params_before"] == 25_610_269  # the learnable 25,557,096 plus BatchNorm statistics
    assert report["params_after"] < 0.6 * report["params_before"]
    assert report["widths"]["res2a_branch1"] == 192 and report["widths"]["res5c_branch2b"] == 384  # 3/4 kept


def test_vgg16_synthetic_command_cuts_conv5_3_and_fc6(tmp_path: Path) -> None:
    result = pytrim("vgg16", "--synthetic", "--images", "2", "--batch", "1", "--finetune-iters", "1", "--out",
                    tmp_path / "vgg", "--quiet", cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "vgg/report.json").read_text())
    assert report["widths"] == {"conv5_3": 384, "fc6": 3072}
    assert report["verify"]["ok"] and report["params_before"] == 138_357_544
