"""ONNX export: one tiny NetSpec net per translation, exported and run in ONNX Runtime against
Caffe on the same input (every blob within 1e-5 of Caffe's, relative to its scale, with
non-trivial BatchNorm statistics and biases); refusals are one `error:` line; a tampered model
fails verification."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import FILL, assert_one_line_error, files_under, net_text, pytrim, toy_db, write_net
from test_topologies import L, P, bn_scale_relu, conv, filler_with_statistics, siamese

from pytrim.caffeio.proto import read_net
from pytrim.core.errors import VerifyFailed
from pytrim.export.build import translate
from pytrim.export.check import check_export, opencv_caveats, opencv_difference
from pytrim.export.save import save_onnx


def pooling_ceil(n, data):
    """Caffe rounds the pooled size up: 9x9 by 3/2 gives 4x4 (floor: 3x3), max and average."""
    n.conv1 = conv(data, 4)
    n.relu1 = L().ReLU(n.conv1, in_place=True)
    n.max = L().Pooling(n.relu1, pool=P().Pooling.MAX, kernel_size=3, stride=2)
    n.ave = L().Pooling(n.relu1, pool=P().Pooling.AVE, kernel_size=3, stride=2)
    n.sum = L().Eltwise(n.max, n.ave)
    return n.sum


def pooling_padded(n, data):
    """Padding: the average divides by the window clipped to the padded image; a last window
    that would start in the padding is dropped."""
    n.conv1 = conv(data, 4)
    n.ave = L().Pooling(n.conv1, pool=P().Pooling.AVE, kernel_size=3, stride=2, pad=1)
    n.max = L().Pooling(n.conv1, pool=P().Pooling.MAX, kernel_size=2, stride=2, pad=1)
    n.gave = L().Pooling(n.ave, pool=P().Pooling.AVE, global_pooling=True)
    n.gmax = L().Pooling(n.max, pool=P().Pooling.MAX, global_pooling=True)
    n.cat = L().Concat(n.gave, n.gmax)
    return n.cat


def lrn(k: float):
    def body(n, data):
        n.conv1 = conv(data, 8)
        n.relu1 = L().ReLU(n.conv1, in_place=True)
        n.across = L().LRN(n.relu1, local_size=3, alpha=0.5, beta=0.75, k=k)
        n.within = L().LRN(n.across, local_size=3, alpha=0.5, beta=0.75, norm_region=P().LRN.WITHIN_CHANNEL)
        return n.within

    return body


def eltwise_ops(n, data):
    n.a = conv(data, 4)
    n.b = conv(data, 4)
    n.sum = L().Eltwise(n.a, n.b, eltwise_param={"operation": P().Eltwise.SUM, "coeff": [1.0, -0.5]})
    n.prod = L().Eltwise(n.sum, n.b, eltwise_param={"operation": P().Eltwise.PROD})
    n.max = L().Eltwise(n.prod, n.a, eltwise_param={"operation": P().Eltwise.MAX})
    return n.max


def slice_concat(n, data):
    """Slice and Concat on the channels and on the height."""
    n.conv1 = conv(data, 6)
    n.c1, n.c2 = L().Slice(n.conv1, ntop=2, slice_param={"axis": 1, "slice_point": [2]})
    n.h1, n.h2, n.h3 = L().Slice(n.conv1, ntop=3, slice_param={"axis": 2, "slice_point": [3, 5]})
    n.back = L().Concat(n.c2, n.c1, axis=1)
    n.rows = L().Concat(n.h3, n.h1, n.h2, axis=2)
    n.both = L().Eltwise(n.back, n.rows)
    return n.both


def cropped(n, data):
    n.conv1 = conv(data, 4)
    n.small = L().Convolution(n.conv1, num_output=4, kernel_size=4, **FILL)
    n.crop = L().Crop(n.conv1, n.small, crop_param={"axis": 2, "offset": [1, 2]})
    n.sum = L().Eltwise(n.crop, n.small)
    return n.sum


def inner_products(n, data):
    """InnerProduct after a 4-D blob (implicit flatten), and one on axis 2."""
    n.conv1 = conv(data, 4)
    n.side = L().InnerProduct(n.conv1, num_output=3, axis=2, **FILL)
    n.flat_side = L().Flatten(n.side)
    n.ip1 = L().InnerProduct(n.conv1, num_output=6, **FILL)
    n.cat = L().Concat(n.ip1, n.flat_side)
    return n.cat


def transposed(n, data):
    n.ip1 = L().InnerProduct(data, num_output=6, **FILL)
    n.ip2 = L().InnerProduct(n.ip1, num_output=5, transpose=True, **FILL)
    return n.ip2


def grouped_depthwise(n, data):
    n.conv1 = conv(data, 8)
    n.grouped = conv(n.conv1, 6, group=2)
    n.dw = conv(n.grouped, 6, group=6, dilation=2, stride=2)
    return n.dw


def deconvolution(n, data):
    n.conv1 = conv(data, 4)
    n.up = L().Deconvolution(n.conv1, convolution_param={"num_output": 6, "kernel_size": 3, "stride": 2, "pad": 1,
                                                         **FILL})  # fmt: skip
    n.up2 = L().Deconvolution(n.up, convolution_param={"num_output": 6, "kernel_size": 2, "stride": 2, "group": 2,
                                                       **FILL})  # fmt: skip
    return n.up2


def batchnorm_scale(n, data):
    """BatchNorm + Scale in place (folded), BatchNorm alone, a Scale without a bias on its own."""
    n.conv1 = conv(data, 6)
    top = bn_scale_relu(n, "conv1", n.conv1)
    n.conv2 = conv(top, 4)
    n.conv2_bn = L().BatchNorm(n.conv2)
    n.conv2_scale = L().Scale(n.conv2_bn, bias_term=False)
    return n.conv2_scale


def bias_and_more(n, data):
    """Bias, Exp, Log, Threshold, Clip, Swish."""
    n.conv1 = conv(data, 4)
    n.bias = L().Bias(n.conv1, bias_param={"filler": {"type": "gaussian", "std": 0.5}})
    n.exp = L().Exp(n.bias, exp_param={"base": 2.0, "scale": 0.5, "shift": -1.0})
    n.log = L().Log(n.exp, log_param={"base": -1.0, "scale": 2.0, "shift": 1.0})
    n.swish = L().Swish(n.log, swish_param={"beta": 1.5})
    n.clip = L().Clip(n.swish, clip_param={"min": -0.5, "max": 1.5})
    n.above = L().Threshold(n.clip, threshold_param={"threshold": 0.5})
    n.sum = L().Eltwise(n.above, n.clip)
    return n.sum


def activations(n, data):
    n.conv1 = conv(data, 4)
    n.prelu = L().PReLU(n.conv1, prelu_param={"filler": {"type": "uniform", "min": -0.5, "max": 0.5}})
    n.leaky = L().ReLU(n.prelu, negative_slope=0.1)
    n.sig = L().Sigmoid(n.leaky)
    n.tanh = L().TanH(n.sig)
    n.elu = L().ELU(n.tanh, alpha=0.7)
    n.abs = L().AbsVal(n.elu)
    n.power = L().Power(n.abs, power=2.0, scale=0.5, shift=1.0)
    n.bnll = L().BNLL(n.power)
    n.drop = L().Dropout(n.bnll, in_place=True)
    n.flat = L().Reshape(n.drop, reshape_param={"shape": {"dim": [0, -1]}})
    n.prob = L().Softmax(n.flat)
    return n.prob


def squeeze_excitation(n, data):
    """Global pooling, reduce, ReLU, expand, Sigmoid, Reshape to (N, C), Scale with two bottoms."""
    n.conv1 = conv(data, 8)
    n.pool = L().Pooling(n.conv1, pool=P().Pooling.AVE, global_pooling=True)
    n.reduce = L().Convolution(n.pool, num_output=2, kernel_size=1, **FILL)
    n.reduce_relu = L().ReLU(n.reduce, in_place=True)
    n.expand = L().Convolution(n.reduce_relu, num_output=8, kernel_size=1, **FILL)
    n.gate = L().Sigmoid(n.expand)
    n.flat = L().Reshape(n.gate, reshape_param={"shape": {"dim": [0, 0]}})
    n.excite = L().Scale(n.conv1, n.flat, axis=0)
    return n.excite


CASES = {
    "ceil-mode pooling with a remainder": (pooling_ceil, [2, 2, 9, 9]),
    "pooling with padding, global pooling": (pooling_padded, [2, 2, 7, 7]),
    "LRN across and within channels": (lrn(1.0), [2, 2, 8, 8]),
    "LRN across channels with k = 2": (lrn(2.0), [2, 2, 8, 8]),
    "Eltwise SUM with coefficients, PROD, MAX": (eltwise_ops, [2, 2, 8, 8]),
    "Slice and Concat on channels and height": (slice_concat, [2, 2, 8, 8]),
    "Crop with offsets": (cropped, [2, 2, 8, 8]),
    "InnerProduct after a 4-D blob, on axis 2": (inner_products, [2, 2, 6, 6]),
    "transposed InnerProduct": (transposed, [2, 2, 6, 6]),
    "grouped and depthwise convolution, dilation": (grouped_depthwise, [2, 2, 9, 9]),
    "Deconvolution, grouped": (deconvolution, [2, 2, 5, 5]),
    "BatchNorm + Scale": (batchnorm_scale, [2, 2, 8, 8]),
    "Bias, Exp, Log, Threshold, Clip, Swish": (bias_and_more, [2, 2, 6, 6]),
    "PReLU, ReLU slope, Sigmoid, TanH, ELU, AbsVal, Power, BNLL, Reshape, Softmax": (activations, [2, 2, 6, 6]),
    "squeeze-and-excitation (Scale with two bottoms)": (squeeze_excitation, [2, 2, 6, 6]),
    "shared weights (Siamese)": (siamese, [2, 2, 8, 8]),
}


def exported(caffe, tmp_path: Path, body, shape: list[int]) -> tuple[Path, Path, dict]:
    deploy = write_net(tmp_path / "deploy.prototxt", net_text(body, shape))
    weights = filler_with_statistics(caffe, deploy, tmp_path / "w.caffemodel")
    return deploy, weights, save_onnx(deploy, weights, tmp_path / "net.onnx")


@pytest.mark.parametrize("case", list(CASES))
def test_each_translation_equals_caffe_in_onnx_runtime(caffe, tmp_path: Path, case: str) -> None:
    body, shape = CASES[case]
    deploy, weights, result = exported(caffe, tmp_path, body, shape)
    assert result["ok"] and result["max_relative_diff"] <= 1e-5, result
    assert result["blobs"] and not result["problems"]  # every blob compared, outputs that vary
    import onnx

    model = onnx.load(str(tmp_path / "net.onnx"))
    assert model.opset_import[0].version >= 17
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"  # the batch is dynamic
    again = translate(deploy, weights)
    assert check_export(deploy, weights, tmp_path / "net.onnx", again, batch=3).ok  # another batch size
    caveats = opencv_caveats(read_net(deploy))
    assert bool(caveats) == (case in OPENCV_DIFFERS), caveats
    if not caveats:
        assert opencv_difference(deploy, weights, again) <= 1e-5  # OpenCV reads the same Caffe files alike


OPENCV_DIFFERS = ("LRN across channels with k = 2", "transposed InnerProduct", "Bias, Exp, Log, Threshold, Clip, Swish")


@pytest.mark.parametrize("case", OPENCV_DIFFERS)
def test_opencv_computes_another_net_where_it_says_so(caffe, tmp_path: Path, case: str) -> None:
    """OpenCV 4.10's Caffe reader ignores LRN's k and InnerProduct's transpose: pytrim names
    them (opencv_caveats) wherever it runs a net in OpenCV; this holds the caveat to the fact."""
    body, shape = CASES[case]
    deploy, weights, _ = exported(caffe, tmp_path, body, shape)
    try:
        assert opencv_difference(deploy, weights, translate(deploy, weights)) > 1e-2
    except Exception as exc:
        assert "Can't create layer" in str(exc), exc


def test_ceil_mode_pooling_gives_caffes_size(caffe, tmp_path: Path) -> None:
    exported(caffe, tmp_path, pooling_ceil, [2, 2, 9, 9])
    import onnx

    model = onnx.load(str(tmp_path / "net.onnx"))
    dims = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim[1:]]
    assert dims == [4, 4, 4]  # (9 - 3) / 2 rounded up, + 1; floor would give 3


def test_batchnorm_and_its_scale_become_one_node(caffe, tmp_path: Path) -> None:
    exported(caffe, tmp_path, batchnorm_scale, [2, 2, 8, 8])
    import onnx

    ops = [node.op_type for node in onnx.load(str(tmp_path / "net.onnx")).graph.node]
    assert ops.count("BatchNormalization") == 2 and ops.count("Mul") == 1  # conv1's Scale folded, conv2's not


def classifier(n, data):
    n.pool = L().Pooling(batchnorm_scale(n, data), pool=P().Pooling.MAX, kernel_size=2, stride=2)
    n.fc = L().InnerProduct(n.pool, num_output=10, **FILL)
    return n.fc


def test_a_train_val_exports_its_test_phase_without_losses(caffe, tmp_path: Path) -> None:
    db = toy_db(tmp_path / "db", 8, side=8)
    net = write_net(tmp_path / "tv.prototxt", net_text(classifier, [4, 1, 8, 8], (db, db, 4)))
    weights = filler_with_statistics(caffe, net, tmp_path / "w.caffemodel")
    done = pytrim("export", "--net", net, "--weights", weights, "--out", tmp_path / "tv.onnx")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "left out of the model (they need labels): accuracy (Accuracy), loss (SoftmaxWithLoss)" in done.stdout
    assert "inputs data; outputs fc" in done.stdout and "export: OK" in done.stdout


def tile(n, data):
    n.conv1 = conv(data, 4)
    n.tile = L().Tile(n.conv1, axis=1, tiles=2)
    return n.tile


def deploy_loss(n, data):
    n.label = L().Input(shape={"dim": [2]})
    n.fc = L().InnerProduct(data, num_output=3, **FILL)
    n.loss = L().SoftmaxWithLoss(n.fc, n.label)
    return n.loss


def python_layer(n, data):
    n.conv1 = conv(data, 4)
    n.twice = L().Python(n.conv1, module="twice_layer", layer="Twice")
    return n.twice


TWICE = """import caffe


class Twice(caffe.Layer):
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = 2 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        pass
"""


def test_a_layer_without_an_onnx_meaning_is_one_error_and_nothing_is_written(
    caffe, tmp_path: Path, monkeypatch
) -> None:
    (tmp_path / "twice_layer.py").write_text(TWICE)
    monkeypatch.syspath_prepend(str(tmp_path))  # Caffe imports the Python layer's module here too
    cases = [(tile, "layer 'tile' (Tile) has no translation to ONNX"),
             (deploy_loss, "layer 'loss' (SoftmaxWithLoss) is a loss or an accuracy in a deploy net"),
             (python_layer, "layer 'twice' (Python) is a Python layer")]  # fmt: skip
    for body, message in cases:
        folder = tmp_path / body.__name__
        folder.mkdir()
        deploy = write_net(folder / "deploy.prototxt", net_text(body, [2, 2, 6, 6]))
        weights = filler_with_statistics(caffe, deploy, folder / "w.caffemodel")
        env = {**os.environ, "PYTHONPATH": str(tmp_path)} if body is python_layer else None
        allow = ["--allow-python-layers"] if body is python_layer else []  # else refused before Caffe runs it
        done = pytrim("export", "--net", deploy, "--weights", weights, "--out", folder / "out/net.onnx", *allow,
                      env=env)  # fmt: skip
        assert_one_line_error(done, message, "nothing was written")
        assert files_under(folder / "out") == []


def test_a_tampered_initializer_fails_verification(caffe, tmp_path: Path) -> None:
    deploy, weights, _ = exported(caffe, tmp_path, batchnorm_scale, [2, 2, 8, 8])
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(tmp_path / "net.onnx"))
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.name == "conv2/weights":
            array = numpy_helper.to_array(tensor).copy()
            array.flat[0] += 0.5
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(array, tensor.name))
    onnx.save(model, str(tmp_path / "tampered.onnx"))
    check = check_export(deploy, weights, tmp_path / "tampered.onnx", translate(deploy, weights))
    assert not check.ok and check.max_relative_diff > 1e-3
    assert "conv2" in check.failure()
    # Each layer is computed from Caffe's own inputs: the difference stays where it is made.
    assert check.worst == "conv2" and check.differences["conv1"] <= 1e-5
    assert check.differences["conv2_bn"] <= 1e-5 and check.end_to_end["conv2_scale"] > 1e-3


def test_a_failed_verification_removes_the_model(caffe, tmp_path: Path) -> None:
    """The check runs on the written file before it is renamed: a model that differs never appears."""
    deploy = write_net(tmp_path / "deploy.prototxt", net_text(batchnorm_scale, [2, 2, 8, 8]))
    weights = filler_with_statistics(caffe, deploy, tmp_path / "w.caffemodel")
    with pytest.raises(VerifyFailed, match="differs by"):
        save_onnx(deploy, weights, tmp_path / "net.onnx", tol=0.0)
    assert files_under(tmp_path) == ["deploy.prototxt", "w.caffemodel"]
    assert np.isfinite(save_onnx(deploy, weights, tmp_path / "net.onnx")["max_relative_diff"])


def test_cut_with_onnx_writes_the_trimmed_model_verified(small_net: dict[str, Path]) -> None:
    selection = small_net["dir"] / "selection.json"
    selection.write_text('{"layers": [{"layer": "conv2", "width": 8, "keep": [0, 2, 4, 6], "remove": [1, 3, 5, 7]}]}')
    out = small_net["dir"] / "cut"
    nets = ("--net", small_net["net"], "--deploy", small_net["deploy"], "--weights", small_net["weights"])
    done = pytrim("cut", *nets, "--selection", selection, "--out", out, "--repeats", "0", "--onnx", "--result",
                  small_net["dir"] / "result.json")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((small_net["dir"] / "result.json").read_text())
    assert result["onnx"]["ok"] and result["onnx"]["max_relative_diff"] <= 1e-5
    assert (out / "trimmed.onnx").is_file() and "export: OK in ONNX Runtime" in done.stdout
