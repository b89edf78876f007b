"""Model-zoo nets generated with NetSpec (pytrim/caffeio/zoo.py) build in pycaffe with their published
names, shapes and parameter counts; their train_val files have the phased data and accuracy layers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import learnable_params
from google.protobuf import text_format

from pytrim.caffeio import zoo
from pytrim.caffeio.env import caffe_pb2
from pytrim.core.errors import BadInput

ROOT = Path(__file__).resolve().parents[1]

# The output blob of each deploy net at batch 1: the nets that end in a 1x1 convolution or a
# global pooling keep their 4-D blobs, as published.
OUTPUT = {
    "resnet50": (1, 1000),
    "googlenet": (1, 1000),
    "squeezenet11": (1, 1000, 1, 1),
    "mobilenet": (1, 1000, 1, 1),
    "mobilenet_v2": (1, 1000, 1, 1),
    "alexnet": (1, 1000),
    "caffenet": (1, 1000),
    "cifar10_full": (1, 10),
    "vgg16": (1, 1000),
    "se_resnet50": (1, 1000),
    "dpn": (1, 1000),
    "inception_resnet": (1, 1000),
}
# A few published blobs and their shapes at batch 1.
SHAPES = {
    "resnet50": {
        "conv1": (1, 64, 112, 112),
        "pool1": (1, 64, 56, 56),
        "res2c": (1, 256, 56, 56),
        "res3d": (1, 512, 28, 28),
        "res4f": (1, 1024, 14, 14),
        "res5c": (1, 2048, 7, 7),
        "pool5": (1, 2048, 1, 1),
    },
    "googlenet": {
        "conv1/7x7_s2": (1, 64, 112, 112),
        "pool1/norm1": (1, 64, 56, 56),
        "conv2/3x3": (1, 192, 56, 56),
        "inception_3a/output": (1, 256, 28, 28),
        "inception_3b/output": (1, 480, 28, 28),
        "inception_4e/output": (1, 832, 14, 14),
        "inception_5b/output": (1, 1024, 7, 7),
        "pool5/7x7_s1": (1, 1024, 1, 1),
    },
    "squeezenet11": {
        "conv1": (1, 64, 113, 113),
        "pool1": (1, 64, 56, 56),
        "fire2/concat": (1, 128, 56, 56),
        "pool3": (1, 128, 28, 28),
        "pool5": (1, 256, 14, 14),
        "fire9/concat": (1, 512, 14, 14),
        "conv10": (1, 1000, 14, 14),
    },
    "mobilenet": {
        "conv1": (1, 32, 112, 112),
        "conv2_1/dw": (1, 32, 112, 112),
        "conv2_2/sep": (1, 128, 56, 56),
        "conv4_2/sep": (1, 512, 14, 14),
        "conv5_6/sep": (1, 1024, 7, 7),
        "conv6/sep": (1, 1024, 7, 7),
        "pool6": (1, 1024, 1, 1),
    },
    "mobilenet_v2": {
        "conv1/bn": (1, 32, 112, 112),
        "conv2_1/linear/bn": (1, 16, 112, 112),
        "block_3_1": (1, 24, 56, 56),
        "conv4_3/linear/bn": (1, 64, 28, 28),  # published: the stride is on conv4_7
        "block_5_2": (1, 96, 14, 14),
        "block_6_2": (1, 160, 7, 7),
        "conv6_4/bn": (1, 1280, 7, 7),
        "pool6": (1, 1280, 1, 1),
    },
    "alexnet": {"conv1": (1, 96, 55, 55), "pool1": (1, 96, 27, 27), "norm2": (1, 256, 27, 27), "pool5": (1, 256, 6, 6)},
    "caffenet": {"conv1": (1, 96, 55, 55), "norm1": (1, 96, 27, 27), "norm2": (1, 256, 13, 13), "fc7": (1, 4096)},
    "cifar10_full": {"pool1": (1, 32, 16, 16), "norm2": (1, 32, 8, 8), "pool3": (1, 64, 4, 4)},
    "vgg16": {"conv5_3": (1, 512, 14, 14), "pool5": (1, 512, 7, 7), "fc6": (1, 4096)},
    "se_resnet50": {"res2b_se_shape": (1, 256), "res3a_se_scale": (1, 512, 28, 28), "res5c": (1, 2048, 7, 7)},
    "dpn": {"dpn2_3_out": (1, 256 + 80, 57, 57), "dpn3_1_res": (1, 512, 29, 29), "dpn5_3_out": (1, 2048 + 640, 8, 8)},
    "inception_resnet": {
        "block_a3_sum": (1, 384, 26, 26),
        "block_b4_sum": (1, 1152, 13, 13),
        "block_c2_sum": (1, 2144, 7, 7),
    },
}
# A few published weight shapes (groups, depthwise convolutions, classifiers).
WEIGHTS = {
    "resnet50": {"conv1": (64, 3, 7, 7), "res5a_branch1": (2048, 1024, 1, 1), "fc1000": (1000, 2048)},
    "googlenet": {"inception_5b/5x5": (128, 48, 5, 5), "loss3/classifier": (1000, 1024)},
    "squeezenet11": {"fire9/expand3x3": (256, 64, 3, 3), "conv10": (1000, 512, 1, 1)},
    "mobilenet": {"conv2_1/dw": (32, 1, 3, 3), "conv6/dw": (1024, 1, 3, 3), "fc7": (1000, 1024, 1, 1)},
    "mobilenet_v2": {"conv2_1/expand": (32, 32, 1, 1), "conv6_3/dwise": (960, 1, 3, 3), "fc7": (1000, 1280, 1, 1)},
    "alexnet": {"conv2": (256, 48, 5, 5), "conv4": (384, 192, 3, 3), "fc6": (4096, 9216)},
    "caffenet": {"conv5": (256, 192, 3, 3), "fc8": (1000, 4096)},
    "cifar10_full": {"conv1": (32, 3, 5, 5), "ip1": (10, 1024)},
    "vgg16": {"fc6": (4096, 25088)},
    "se_resnet50": {"res2a_se_down": (16, 256, 1, 1), "res5c_se_up": (2048, 128, 1, 1)},
    "dpn": {"dpn3_1_b": (192, 6, 3, 3), "dpn5_proj": (2048 + 256, 1024 + 24 * 8, 1, 1)},
    "inception_resnet": {"block_b1_b1_1": (160, 128, 1, 7), "block_c2_up": (2144, 448, 1, 1)},
}
LEARNABLE = ("Convolution", "InnerProduct", "Scale", "PReLU")


def parse(text: str) -> caffe_pb2:
    return text_format.Parse(text, caffe_pb2().NetParameter())


@pytest.mark.parametrize("name", list(zoo.NETS))
def test_deploy_builds_with_the_published_shapes_and_parameter_count(caffe, tmp_path: Path, name: str) -> None:
    (path,) = zoo.write(name, tmp_path, kinds=["deploy"])
    net = caffe.Net(str(path), caffe.TEST)
    assert net.outputs == ["prob"] and net.blobs["prob"].data.shape == OUTPUT[name]
    learnable = [layer for layer, blobs in net.params.items() if net.layer_dict[layer].type in LEARNABLE]
    count = sum(blob.data.size for layer in learnable for blob in net.params[layer])
    assert count == learnable_params(net) == zoo.published_params[name]
    assert {blob: net.blobs[blob].data.shape for blob in SHAPES[name]} == SHAPES[name]
    assert {layer: net.params[layer][0].data.shape for layer in WEIGHTS[name]} == WEIGHTS[name]
    for layer, blobs in net.params.items():
        if net.layer_dict[layer].type in ("Convolution", "InnerProduct"):
            assert blobs[0].data.std() > 0, f"{layer}: weights not filled"
    batch_norms = [layer for layer in parse(path.read_text()).layer if layer.type == "BatchNorm"]
    assert all(layer.batch_norm_param.use_global_stats for layer in batch_norms)


@pytest.mark.parametrize("name", list(zoo.NETS))
def test_train_val_has_phased_lmdb_data_and_test_accuracies(name: str) -> None:
    pb2, info = caffe_pb2(), zoo.INPUTS[name]
    net = parse(zoo.text(name, "train_val", train_source="t_lmdb", test_source="v_lmdb", test_batch=7))
    data = [layer for layer in net.layer if layer.type == "Data"]
    assert [(d.name, list(d.top), [r.phase for r in d.include]) for d in data] == [
        ("data", ["data", "label"], [pb2.TRAIN]),
        ("data", ["data", "label"], [pb2.TEST]),
    ]
    assert [(d.data_param.source, d.data_param.batch_size, d.data_param.backend) for d in data] == [
        ("t_lmdb", info.train_batch, pb2.DataParameter.LMDB),
        ("v_lmdb", 7, pb2.DataParameter.LMDB),
    ]
    for d, mirror in zip(data, (info.mirror, False), strict=True):
        t = d.transform_param
        assert (t.mirror, t.crop_size) == (mirror, info.size if info.crop else 0)
        assert list(t.mean_value) == pytest.approx(info.mean) and t.scale == pytest.approx(info.scale or 1)
    heads = {layer.name: layer for layer in net.layer if layer.type in ("Accuracy", "SoftmaxWithLoss")}
    assert {"loss", "accuracy", "accuracy_top5"} <= set(heads)
    assert heads["accuracy_top5"].accuracy_param.top_k == 5 and heads["accuracy"].accuracy_param.top_k == 1
    for acc in ("accuracy", "accuracy_top5"):
        assert [r.phase for r in heads[acc].include] == [pb2.TEST]
    assert not any(layer.batch_norm_param.HasField("use_global_stats") for layer in net.layer)


def as_input(net: caffe_pb2, size: int) -> caffe_pb2:
    """A train_val with its Data layers replaced by one Input layer (data, label) of batch 2."""
    out = caffe_pb2().NetParameter(name=net.name)
    layer = out.layer.add(name="data", type="Input", top=["data", "label"])
    layer.input_param.shape.add(dim=[2, 3, size, size])
    layer.input_param.shape.add(dim=[2])
    out.layer.extend(layer for layer in net.layer if layer.type != "Data")
    return out


@pytest.mark.parametrize("name", list(zoo.NETS))
def test_train_val_builds_in_the_train_phase(caffe, tmp_path: Path, name: str) -> None:
    options = {"aux": True} if name == "googlenet" else {}
    net_param = as_input(zoo.build(name, "train_val", **options), zoo.INPUTS[name].size)
    path = tmp_path / "train.prototxt"
    path.write_text(text_format.MessageToString(net_param))
    net = caffe.Net(str(path), caffe.TRAIN)
    assert "accuracy" not in net.blobs  # TEST only
    # The same learnable parameters as deploy; GoogLeNet's auxiliary classifiers add 6,379,728.
    assert learnable_params(net) == zoo.published_params[name] + (6_379_728 if options else 0)
    rng = np.random.default_rng(0)
    net.blobs["data"].data[...] = rng.normal(0, 50, net.blobs["data"].data.shape)
    net.blobs["label"].data[...] = rng.integers(0, zoo.INPUTS[name].classes, 2)
    loss = float(net.forward()["loss"])  # batch statistics in the TRAIN phase: no blow-up
    assert np.isfinite(loss) and loss > 0
    if options.get("aux"):  # the published auxiliary classifiers, loss weight 0.3
        assert net.blobs["loss1/classifier"].data.shape == net.blobs["loss2/classifier"].data.shape == (2, 1000)
        weights = {layer.name: list(layer.loss_weight) for layer in net_param.layer if layer.type == "SoftmaxWithLoss"}
        assert weights == {"loss1/loss": [pytest.approx(0.3)], "loss2/loss": [pytest.approx(0.3)], "loss": []}


def test_googlenet_train_val_without_aux_has_one_classifier() -> None:
    names = {layer.name for layer in zoo.build("googlenet", "train_val").layer}
    assert "loss3/classifier" in names and not any(n.startswith(("loss1/", "loss2/")) for n in names)
    assert not any(n.startswith("loss1/") for n in (layer.name for layer in zoo.build("googlenet").layer))


def test_vgg16_generator_matches_the_hand_written_prototxt() -> None:
    def strip(net: caffe_pb2) -> list[str]:
        for layer in net.layer:
            del layer.param[:]
            for field in ("convolution_param", "inner_product_param"):
                for filler in ("weight_filler", "bias_filler"):
                    getattr(layer, field).ClearField(filler)
                if not getattr(layer, field).ListFields():
                    layer.ClearField(field)
        return [text_format.MessageToString(layer, as_one_line=True) for layer in net.layer]

    for kind, batch in (("deploy", 10), ("train_val", 1)):
        written = parse((ROOT / f"prototxt/vgg16/{kind}.prototxt").read_text())
        assert strip(zoo.build("vgg16", kind, batch=batch)) == strip(written)


def test_the_resnet50_prototxts_are_the_generators_output() -> None:
    folder = ROOT / "prototxt/resnet50"
    for kind in zoo.KINDS:
        assert (folder / f"{kind}.prototxt").read_text() == zoo.text("resnet50", kind), f"regenerate {kind}"
    solver = text_format.Parse((folder / "solver.prototxt").read_text(), caffe_pb2().SolverParameter())
    assert solver.net == "prototxt/resnet50/train_val.prototxt"
    assert solver.solver_mode == caffe_pb2().SolverParameter.CPU
    assert (solver.base_lr, solver.momentum, solver.weight_decay) == pytest.approx((0.1, 0.9, 1e-4))


def test_build_and_write_check_their_arguments(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="unknown net"):
        zoo.build("resnet51")
    with pytest.raises(BadInput, match="unknown kind"):
        zoo.build("resnet50", "train")
    with pytest.raises(BadInput, match="at least 1"):
        zoo.build("alexnet", batch=0)
    paths = zoo.write("cifar10_full", tmp_path / "out", batch=3)
    assert paths == [tmp_path / "out/train_val.prototxt", tmp_path / "out/deploy.prototxt"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["deploy.prototxt", "train_val.prototxt"]
    assert list(parse(paths[1].read_text()).layer[0].input_param.shape[0].dim) == [3, 3, 32, 32]


def test_tool_lists_and_writes(tmp_path: Path) -> None:
    tool = [sys.executable, str(ROOT / "tools/zoo.py")]
    listing = subprocess.run([*tool, "--list"], check=True, capture_output=True, text=True).stdout
    assert all(name in listing for name in zoo.NETS) and "25,557,096" in listing
    subprocess.run([*tool, "--nets", "squeezenet11", "--out", str(tmp_path), "--kind", "deploy"], check=True)
    assert [p.name for p in tmp_path.iterdir()] == ["deploy.prototxt"]
    bad = [*tool, "--nets", "alexnet", "--out", str(tmp_path), "--kind", "train"]
    bad = subprocess.run(bad, check=False, capture_output=True, text=True)
    assert bad.returncode == 1 and "--kind: train" in bad.stderr and not (tmp_path / "train.prototxt").exists()
