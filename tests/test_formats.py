"""The streaming caffemodel codec, and V1 prototxts/caffemodels upgraded and trimmed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import pytrim, read_model, write_model, write_net

from pytrim.caffeio.caffemodel import Caffemodel, CaffemodelError
from pytrim.caffeio.env import caffe_pb2
from pytrim.caffeio.proto import read_net
from pytrim.caffeio.upgrade import current_format, is_old_caffemodel, is_old_prototxt
from pytrim.core.errors import BadInput

ROOT = Path(__file__).resolve().parents[1]

V1_NET = """name: "v1"
input: "data"
input_dim: 2
input_dim: 1
input_dim: 8
input_dim: 8
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
         convolution_param { num_output: 4 kernel_size: 3 } }
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "ip1" type: INNER_PRODUCT bottom: "pool1" top: "ip1" inner_product_param { num_output: 5 } }
"""


def v1_model(path: Path) -> Path:
    """A V1 caffemodel (V1LayerParameter, legacy 4-d blob shapes) for V1_NET."""
    pb2 = caffe_pb2()
    rng = np.random.default_rng(0)
    model = pb2.NetParameter(name="v1")
    for name, kind, shapes in (
        ("conv1", pb2.V1LayerParameter.CONVOLUTION, [(4, 1, 3, 3), (1, 1, 1, 4)]),
        ("ip1", pb2.V1LayerParameter.INNER_PRODUCT, [(1, 1, 5, 36), (1, 1, 1, 5)]),
    ):
        layer = model.layers.add(name=name, type=kind)
        for shape in shapes:
            blob = layer.blobs.add(num=shape[0], channels=shape[1], height=shape[2], width=shape[3])
            blob.data.extend(rng.normal(size=int(np.prod(shape))).astype(np.float32).tolist())
    return write_model(model, path)


def test_a_kept_parse_is_a_fresh_message_of_the_files_current_bytes(tmp_path: Path) -> None:
    net = write_net(tmp_path / "a.prototxt", 'name: "a"\nlayer { name: "x" type: "Input" top: "x" }\n')
    first = read_net(net)
    first.layer[0].name = "changed"  # a caller's edit must not reach the next reader
    assert read_net(net).layer[0].name == "x"
    net.write_text('name: "a"\nlayer { name: "y" type: "Input" top: "y" }\n')
    assert read_net(net).layer[0].name == "y"  # keyed by content, not by path or time
    net.write_text('name: "a"\nlayer { name: "y" type: "Input" top: "y" ')
    with pytest.raises(BadInput, match=r"a\.prototxt: not a valid prototxt"):
        read_net(net)


def test_codec_reads_what_protobuf_reads_and_copies_exactly(caffe, tmp_path: Path) -> None:
    net = caffe.Net(str(ROOT / "prototxt/lenet/deploy.prototxt"), caffe.TEST)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = np.random.default_rng(1).normal(size=blob.data.shape)
    net.save(str(tmp_path / "m.caffemodel"))
    with Caffemodel(tmp_path / "m.caffemodel") as model:
        assert list(model.layers) == ["conv1", "conv2", "ip1", "ip2"] and model.params() == 431080
        for name, blobs in net.params.items():
            for got, want in zip(model.arrays(name), blobs, strict=True):
                np.testing.assert_array_equal(got, want.data)
        model.write(tmp_path / "copy.caffemodel", {})
        w, b = model.arrays("ip2")
        model.write(tmp_path / "small.caffemodel", {"ip2": [w[:3], b[:3]]})
        kept = w[:3].copy()
    assert (tmp_path / "copy.caffemodel").read_bytes() == (tmp_path / "m.caffemodel").read_bytes()
    changed = {layer.name: layer for layer in read_model(tmp_path / "small.caffemodel").layer}
    assert list(changed["ip2"].blobs[0].shape.dim) == [3, 500]
    np.testing.assert_array_equal(np.array(changed["ip2"].blobs[0].data, np.float32).reshape(3, 500), kept)
    assert changed["ip2"].type == "InnerProduct" and len(changed) == 9  # other fields and layers kept


def test_codec_rejects_garbage_and_reads_legacy_shapes(tmp_path: Path) -> None:
    (tmp_path / "bad.caffemodel").write_bytes(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")
    with pytest.raises(CaffemodelError, match="not a valid caffemodel"):
        Caffemodel(tmp_path / "bad.caffemodel")
    with Caffemodel(v1_model(tmp_path / "v1.caffemodel")) as model:
        assert model.v1 and [b.shape for b in model.layers["ip1"].blobs] == [(1, 1, 5, 36), (1, 1, 1, 5)]
        with pytest.raises(CaffemodelError, match="V1 format"):
            model.write(tmp_path / "x.caffemodel", {"ip1": model.arrays("ip1")})


def test_v1_files_are_upgraded_and_trimmed(caffe, tmp_path: Path) -> None:
    proto = write_net(tmp_path / "v1.prototxt", V1_NET)
    weights = v1_model(tmp_path / "v1.caffemodel")
    assert is_old_prototxt(proto) and is_old_caffemodel(weights)
    notes: list[str] = []
    new_proto = current_format(proto, "net", notes.append)
    new_weights = current_format(weights, "weights", notes.append)
    assert not is_old_prototxt(new_proto) and not is_old_caffemodel(new_weights)
    assert [layer.type for layer in read_net(new_proto).layer][:2] == ["Input", "Convolution"]
    assert len(notes) == 2 and all("old (V0/V1) format" in n for n in notes)
    assert current_format(new_proto, "net", notes.append) == new_proto and len(notes) == 2  # current: unchanged
    # The tools take the V1 files directly: upgraded, cut, verified.
    selection = tmp_path / "sel.json"
    selection.write_text(json.dumps({"layers": [{"layer": "conv1", "width": 4, "keep": [0, 2, 3], "remove": [1]}]}))
    result = pytrim("cut", "--net", proto, "--weights", weights, "--selection", selection, "--out",
                    tmp_path / "cut", "--verify")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "old (V0/V1) format; upgraded with Caffe's upgrade_net_proto_text" in result.stderr
    assert "upgrade_net_proto_binary" in result.stderr and "verify: OK" in result.stdout
    trimmed = caffe.Net(str(tmp_path / "cut/train_val.prototxt"), str(tmp_path / "cut/trimmed.caffemodel"), caffe.TEST)
    assert trimmed.params["conv1"][0].data.shape == (3, 1, 3, 3)
    assert trimmed.params["ip1"][0].data.shape == (5, 27)
