"""Any net end to end on random weights: the full-size ResNet-50 of the model-zoo generator
(every trimmable channel group cut by a quarter, verified exact on weights that compute
something, even from a deploy prototxt that names no fillers), nets with other inputs and
outputs, and the VGG-16 command."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import ROOT, pytrim

from pytrim.caffeio.proto import read_net, write_text
from pytrim.caffeio.zoo import write


def without_fillers(deploy: Path) -> Path:
    """The prototxt as published deploy files are: no weight or bias fillers (Caffe's default: zeros)."""
    net = read_net(deploy)
    for layer in net.layer:
        for spec in (layer.convolution_param, layer.inner_product_param):
            spec.ClearField("weight_filler")
            spec.ClearField("bias_filler")
    return write_text(net, deploy)


def test_full_size_resnet50_every_group_cut_and_verified(tmp_path: Path) -> None:
    (deploy,) = write("resnet50", tmp_path / "prototxt", ["deploy"])
    without_fillers(deploy)
    result = pytrim("synthetic", "--net", deploy, "--out", tmp_path / "run", "--images", "4", "--batch", "2",
                    "--repeats", "1", "--quiet", "--result", tmp_path / "result.json")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "result.json").read_text())
    assert report == json.loads((tmp_path / "run/report.json").read_text())
    coverage = report["coverage"]
    assert (coverage["conv_ip_layers"], coverage["trimmable"]) == (54, 53)
    assert list(coverage["refused"]) == ["fc1000"] and "net's outputs" in coverage["refused"]["fc1000"]
    verified = report["verify"]
    assert verified["ok"] and verified["exact"] and 0 < verified["max_relative_diff"] <= 1e-5  # a real comparison
    assert set(report["steps"]) == {"weights", "collect", "choose", "cut", "verify", "train", "speed"}
    assert all(step["seconds"] > 0 and step["peak_rss_mb"] > 0 for step in report["steps"].values())
    assert report["machine"]["blas_threads"] == 1 and report["machine"]["cpu"]  # what the numbers came from
    assert report["params_before"] == 25_610_269  # the learnable 25,557,096 plus BatchNorm statistics
    assert report["params_after"] < 0.6 * report["params_before"]
    assert report["widths"]["res2a_branch1"] == 192 and report["widths"]["res5c_branch2b"] == 384  # 3/4 kept
    assert report["cost"]["macs_ratio"] > 1.5 and report["cost"]["speedup_batch1"] > 0


def test_vgg16_synthetic_command_cuts_conv5_3_and_fc6(tmp_path: Path) -> None:
    result = pytrim("vgg16", "--synthetic", "--images", "2", "--batch", "1", "--finetune-iters", "1", "--out",
                    tmp_path / "vgg", "--repeats", "1", "--quiet", cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "vgg/report.json").read_text())
    assert report["widths"] == {"conv5_3": 384, "fc6": 3072}
    assert report["verify"]["ok"] and report["params_before"] == 138_357_544


def test_nets_with_other_inputs_and_outputs(caffe, tmp_path: Path) -> None:
    """Two Input tops of other names and an output that is not one score per class (a
    feature map): the generated inputs follow the tops, the loss fits the output's shape."""
    import caffe as c
    from caffe import layers as L

    n = c.NetSpec()
    n.left, n.right = L.Input(ntop=2, shape=[{"dim": [2, 3, 12, 12]}, {"dim": [2, 3, 12, 12]}])
    n.a = L.Convolution(n.left, num_output=6, kernel_size=3, pad=1)
    n.b = L.Convolution(n.right, num_output=6, kernel_size=3, pad=1)
    n.sum = L.Eltwise(n.a, n.b)
    n.relu = L.ReLU(n.sum, in_place=True)
    n.map = L.Convolution(n.relu, num_output=4, kernel_size=1)
    deploy = tmp_path / "siamese.prototxt"
    deploy.write_text(str(n.to_proto()))
    result = pytrim("synthetic", "--net", deploy, "--out", tmp_path / "run", "--images", "4", "--batch", "2",
                    "--quiet", "--result", tmp_path / "r.json")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["widths"] == {"a": 5} and report["verify"]["ok"] and report["verify"]["max_relative_diff"] <= 1e-5
