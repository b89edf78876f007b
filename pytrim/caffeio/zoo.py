"""Public model-zoo nets, generated with pycaffe's NetSpec, with their published names and shapes.

Each net is built layer by layer in Python (never copied prototxt text) after its published
Caffe definition, with the same layer names, blob names (in-place layers where the published
file has them), kernel sizes, strides, pads, groups and widths, so that the published
caffemodels would load into it and pytrim can be tried on it with filler weights:

    resnet50      KaimingHe/deep-residual-networks prototxt/ResNet-50-deploy.prototxt
    googlenet     BVLC models/bvlc_googlenet (deploy without the auxiliary classifiers;
                  train_val with them as published with aux=True)
    squeezenet11  forresti/SqueezeNet (DeepScale) SqueezeNet_v1.1
    mobilenet     shicai/MobileNet-Caffe mobilenet_deploy.prototxt (v1)
    mobilenet_v2  shicai/MobileNet-Caffe mobilenet_v2_deploy.prototxt
    alexnet       BVLC models/bvlc_alexnet
    caffenet      BVLC models/bvlc_reference_caffenet (pool before norm)
    cifar10_full  Caffe examples/cifar10/cifar10_full
    vgg16         model-zoo gist 211839e770f7b538e2d8 (equivalent to the hand-written prototxt/vgg16)

`build(name, "deploy")` gives the deploy net (an Input layer "data", Softmax "prob");
`build(name, "train_val")` gives TRAIN/TEST LMDB Data layers, SoftmaxWithLoss "loss" and the
TEST-phase Accuracy layers "accuracy" and "accuracy_top5". Every Convolution/InnerProduct has a
weight filler (and a constant bias filler), so a net built from either file has random weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from google.protobuf import text_format

from pytrim.caffeio.env import HOW_TO_BUILD, caffe_pb2
from pytrim.core.errors import BadInput, CaffeNotFound
from pytrim.core.files import together

KINDS = ("train_val", "deploy")
IMAGENET_MEAN = (104.0, 117.0, 123.0)  # BGR, as the published ImageNet nets subtract


def net_spec() -> ModuleType:
    """pycaffe's caffe.net_spec, imported on first use (so that importing pytrim.caffeio.zoo needs no Caffe)."""
    try:
        from caffe import net_spec
    except ImportError as exc:
        raise CaffeNotFound(f"pycaffe cannot be imported ({exc}): {HOW_TO_BUILD}") from exc
    return net_spec


class _Lazy:
    """Stands for caffe.layers / caffe.params until pycaffe is first needed."""

    def __init__(self, attr: str) -> None:
        self._attr = attr

    def __getattr__(self, name: str) -> Any:
        return getattr(getattr(net_spec(), self._attr), name)


L = _Lazy("layers")  # L.Convolution(bottom, ...) as `from caffe import layers as L`
P = _Lazy("params")  # P.Pooling.MAX as `from caffe import params as P`


# --- layer helpers ------------------------------------------------------------------------------

WEIGHT = {"lr_mult": 1, "decay_mult": 1}
BIAS = {"lr_mult": 2, "decay_mult": 0}
NO_DECAY = {"lr_mult": 1, "decay_mult": 0}


def filler(kind: str, std: float | None = None) -> dict[str, Any]:
    """A weight filler: msra, xavier or gaussian (with std)."""
    return {"type": kind} if std is None else {"type": kind, "std": std}


def conv(
    n: Any,
    name: str,
    bottom: Any,
    num_output: int,
    kernel: int,
    stride: int = 1,
    pad: int = 0,
    group: int = 1,
    bias: float | None = 0.0,
    weights: dict[str, Any] | None = None,
    depthwise: bool = False,
    param: list[dict[str, float]] | None = None,
) -> Any:
    """A Convolution named `name` with top `name`; bias=None: bias_term false, else its constant.
    depthwise: group = channels with engine CAFFE, as the published MobileNets."""
    kw: dict[str, Any] = {"num_output": num_output, "kernel_size": kernel, "weight_filler": weights or filler("msra")}
    if stride != 1:
        kw["stride"] = stride
    if pad:
        kw["pad"] = pad
    if depthwise:
        kw.update(group=num_output, engine=P.Convolution.CAFFE)
    elif group != 1:
        kw["group"] = group
    if bias is None:
        kw["bias_term"] = False
    else:
        kw["bias_filler"] = {"type": "constant", "value": bias}
    if param is None:
        param = [WEIGHT] if bias is None else [WEIGHT, BIAS]
    if param:  # an empty list: no param specs (Caffe's defaults), as cifar10_full's conv3
        kw["param"] = param
    n[name] = L.Convolution(bottom, **kw)
    return n[name]


def fc(n: Any, name: str, bottom: Any, num_output: int, weights: dict[str, Any], bias: float = 0.0) -> Any:
    """An InnerProduct named `name` with top `name`."""
    n[name] = L.InnerProduct(
        bottom,
        num_output=num_output,
        param=[WEIGHT, BIAS],
        weight_filler=weights,
        bias_filler={"type": "constant", "value": bias},
    )
    return n[name]


def relu(n: Any, name: str, bottom: Any) -> Any:
    """An in-place ReLU named `name`."""
    n[name] = L.ReLU(bottom, in_place=True)
    return n[name]


def pool(n: Any, name: str, bottom: Any, kind: str, kernel: int = 0, stride: int = 1, pad: int = 0) -> Any:
    """A MAX or AVE Pooling named `name`; kernel 0: global pooling."""
    kw: dict[str, Any] = {"pool": getattr(P.Pooling, kind)}
    if kernel:
        kw.update(kernel_size=kernel, stride=stride)
    else:
        kw["global_pooling"] = True
    if pad:
        kw["pad"] = pad
    n[name] = L.Pooling(bottom, **kw)
    return n[name]


def lrn(n: Any, name: str, bottom: Any, local_size: int = 5, alpha: float = 1e-4, within: bool = False) -> Any:
    """An LRN named `name` (ACROSS_CHANNELS unless within)."""
    kw: dict[str, Any] = {"local_size": local_size, "alpha": alpha, "beta": 0.75}
    if within:
        kw["norm_region"] = P.LRN.WITHIN_CHANNEL
    n[name] = L.LRN(bottom, **kw)
    return n[name]


def dropout(n: Any, name: str, bottom: Any, ratio: float) -> Any:
    """An in-place Dropout named `name`."""
    n[name] = L.Dropout(bottom, dropout_ratio=ratio, in_place=True)
    return n[name]


def bn_scale(n: Any, bn: str, scale: str, bottom: Any, train: bool, in_place: bool = True) -> Any:
    """BatchNorm `bn` (in place, or with top `bn`) then an in-place Scale `scale` with bias.
    use_global_stats is true in deploy and unset in train_val (Caffe then picks it per phase)."""
    kw = {} if train else {"use_global_stats": True}
    n[bn] = L.BatchNorm(bottom, in_place=in_place, **kw)
    n[scale] = L.Scale(
        n[bn],
        in_place=True,
        bias_term=True,
        param=[NO_DECAY, NO_DECAY],
        filler={"type": "constant", "value": 1},
        bias_filler={"type": "constant", "value": 0},
    )
    return n[scale]


# --- the nets: each takes (NetSpec, data top, train) and returns the class-score top -------------


def resnet50(n: Any, data: Any, train: bool) -> Any:
    """ResNet-50 (He et al. 2016) as KaimingHe/deep-residual-networks ResNet-50-deploy.prototxt:
    bottleneck blocks res2a..res5c, the stride on branch2a (1x1) and branch1, conv1 with a bias."""
    x = conv(n, "conv1", data, 64, 7, stride=2, pad=3)
    x = relu(n, "conv1_relu", bn_scale(n, "bn_conv1", "scale_conv1", x, train))
    x = pool(n, "pool1", x, "MAX", 3, 2)
    for stage, width, blocks, stride in ((2, 64, 3, 1), (3, 128, 4, 2), (4, 256, 6, 2), (5, 512, 3, 2)):
        for i in range(blocks):
            x = bottleneck(n, f"{stage}{'abcdef'[i]}", x, width, stride if i == 0 else 1, i == 0, train)
    x = pool(n, "pool5", x, "AVE", 7, 1)
    return fc(n, "fc1000", x, 1000, filler("msra"))


def bottleneck(n: Any, block: str, x: Any, width: int, stride: int, project: bool, train: bool,
               se: bool = False) -> Any:  # fmt: skip
    """One ResNet bottleneck res{block}: branch2a/2b/2c (+ branch1 projection), with `se` an
    excitation res{block}_se on the branch (se_unit), Eltwise SUM, ReLU."""

    def unit(branch: str, bottom: Any, num_output: int, kernel: int, stride: int = 1) -> Any:
        name = f"res{block}_{branch}"
        y = conv(n, name, bottom, num_output, kernel, stride=stride, pad=kernel // 2, bias=None)
        return bn_scale(n, f"bn{block}_{branch}", f"scale{block}_{branch}", y, train)

    shortcut = unit("branch1", x, 4 * width, 1, stride) if project else x
    y = relu(n, f"res{block}_branch2a_relu", unit("branch2a", x, width, 1, stride))
    y = relu(n, f"res{block}_branch2b_relu", unit("branch2b", y, width, 3))
    y = unit("branch2c", y, 4 * width, 1)
    if se:
        y = se_unit(n, f"res{block}_se", y, 4 * width)
    n[f"res{block}"] = L.Eltwise(shortcut, y)
    return relu(n, f"res{block}_relu", n[f"res{block}"])


# GoogLeNet inception widths: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj (Szegedy et al. Table 1).
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


def googlenet(n: Any, data: Any, train: bool, aux: bool = False) -> Any:
    """GoogLeNet as BVLC bvlc_googlenet; aux=True (train_val only): the two auxiliary classifiers
    loss1/* (after inception_4a) and loss2/* (after inception_4d) with loss weight 0.3, as published
    (pytrim.stats.evaluate scores the first classifier that meets the labels: loss1/classifier then)."""
    x = relu(n, "conv1/relu_7x7", gconv(n, "conv1/7x7_s2", data, 64, 7, stride=2, pad=3))
    x = lrn(n, "pool1/norm1", pool(n, "pool1/3x3_s2", x, "MAX", 3, 2))
    x = relu(n, "conv2/relu_3x3_reduce", gconv(n, "conv2/3x3_reduce", x, 64, 1))
    x = relu(n, "conv2/relu_3x3", gconv(n, "conv2/3x3", x, 192, 3, pad=1))
    x = pool(n, "pool2/3x3_s2", lrn(n, "conv2/norm2", x), "MAX", 3, 2)
    for block in INCEPTION:
        if block in ("4a", "5a"):
            x = pool(n, f"pool{int(block[0]) - 1}/3x3_s2", x, "MAX", 3, 2)
        x = inception(n, block, x)
        if aux and train and block in ("4a", "4d"):
            auxiliary(n, "loss1" if block == "4a" else "loss2", x)
    x = dropout(n, "pool5/drop_7x7_s1", pool(n, "pool5/7x7_s1", x, "AVE", 7, 1), 0.4)
    return fc(n, "loss3/classifier", x, 1000, filler("xavier"))


def gconv(n: Any, name: str, bottom: Any, num_output: int, kernel: int, stride: int = 1, pad: int = 0) -> Any:
    """A GoogLeNet convolution: xavier weights, bias 0.2."""
    return conv(n, name, bottom, num_output, kernel, stride=stride, pad=pad, bias=0.2, weights=filler("xavier"))


def inception(n: Any, block: str, x: Any) -> Any:
    """inception_{block}: 1x1, 3x3 reduce + 3x3, 5x5 reduce + 5x5, 3x3 max pool + proj, Concat."""
    b1, r3, b3, r5, b5, proj = INCEPTION[block]
    p = f"inception_{block}/"
    t1 = relu(n, p + "relu_1x1", gconv(n, p + "1x1", x, b1, 1))
    t3 = relu(n, p + "relu_3x3_reduce", gconv(n, p + "3x3_reduce", x, r3, 1))
    t3 = relu(n, p + "relu_3x3", gconv(n, p + "3x3", t3, b3, 3, pad=1))
    t5 = relu(n, p + "relu_5x5_reduce", gconv(n, p + "5x5_reduce", x, r5, 1))
    t5 = relu(n, p + "relu_5x5", gconv(n, p + "5x5", t5, b5, 5, pad=2))
    tp = relu(n, p + "relu_pool_proj", gconv(n, p + "pool_proj", pool(n, p + "pool", x, "MAX", 3, 1, 1), proj, 1))
    n[p + "output"] = L.Concat(t1, t3, t5, tp)
    return n[p + "output"]


def auxiliary(n: Any, head: str, x: Any) -> None:
    """A GoogLeNet auxiliary classifier with its loss (weight 0.3) and TEST accuracies, as published."""
    x = pool(n, f"{head}/ave_pool", x, "AVE", 5, 3)
    x = relu(n, f"{head}/relu_conv", gconv(n, f"{head}/conv", x, 128, 1))
    x = relu(n, f"{head}/relu_fc", fc(n, f"{head}/fc", x, 1024, filler("xavier"), 0.2))
    x = fc(n, f"{head}/classifier", dropout(n, f"{head}/drop_fc", x, 0.7), 1000, filler("xavier"))
    n[f"{head}/{head}"] = L.SoftmaxWithLoss(x, n.label, loss_weight=0.3, name=f"{head}/loss")
    test = {"phase": caffe_pb2().TEST}
    n[f"{head}/top-1"] = L.Accuracy(x, n.label, include=test)
    n[f"{head}/top-5"] = L.Accuracy(x, n.label, include=test, top_k=5)


def squeezenet11(n: Any, data: Any, train: bool) -> Any:
    """SqueezeNet v1.1 (DeepScale): 3x3/64 conv1, fire2..fire9, pools after conv1, fire3, fire5,
    conv10 (gaussian 0.01, the others xavier; no lr/decay multipliers, as published), global AVE pool10."""
    x = relu(n, "relu_conv1", conv(n, "conv1", data, 64, 3, stride=2, weights=filler("xavier"), param=[]))
    x = pool(n, "pool1", x, "MAX", 3, 2)
    for i, squeeze in enumerate((16, 16, 32, 32, 48, 48, 64, 64), 2):
        x = fire(n, i, x, squeeze, 4 * squeeze)
        if i in (3, 5):
            x = pool(n, f"pool{i}", x, "MAX", 3, 2)
    x = dropout(n, "drop9", x, 0.5)
    x = relu(n, "relu_conv10", conv(n, "conv10", x, 1000, 1, weights=filler("gaussian", 0.01), param=[]))
    return pool(n, "pool10", x, "AVE")


def fire(n: Any, i: int, x: Any, squeeze: int, expand: int) -> Any:
    """fire{i}: squeeze1x1, then expand1x1 and expand3x3 concatenated."""
    p, xavier = f"fire{i}/", filler("xavier")
    s = relu(n, p + "relu_squeeze1x1", conv(n, p + "squeeze1x1", x, squeeze, 1, weights=xavier, param=[]))
    e1 = relu(n, p + "relu_expand1x1", conv(n, p + "expand1x1", s, expand, 1, weights=xavier, param=[]))
    e3 = relu(n, p + "relu_expand3x3", conv(n, p + "expand3x3", s, expand, 3, pad=1, weights=xavier, param=[]))
    n[p + "concat"] = L.Concat(e1, e3)
    return n[p + "concat"]


def mobilenet(n: Any, data: Any, train: bool) -> Any:
    """MobileNet v1 (1.0, 224) as shicai/MobileNet-Caffe: conv1, 13 depthwise (conv*/dw, engine
    CAFFE) + pointwise (conv*/sep) pairs, each with in-place */bn, */scale and relu*, pool6, fc7 (1x1)."""
    x = conv(n, "conv1", data, 32, 3, stride=2, pad=1, bias=None)
    x = relu(n, "relu1", bn_scale(n, "conv1/bn", "conv1/scale", x, train))
    channels = 32
    for block, width, stride in (
        ("2_1", 64, 1), ("2_2", 128, 2), ("3_1", 128, 1), ("3_2", 256, 2), ("4_1", 256, 1), ("4_2", 512, 2),
        ("5_1", 512, 1), ("5_2", 512, 1), ("5_3", 512, 1), ("5_4", 512, 1), ("5_5", 512, 1), ("5_6", 1024, 2),
        ("6", 1024, 1),
    ):  # fmt: skip
        for part, num_output, kernel in (("dw", channels, 3), ("sep", width, 1)):
            name, dw = f"conv{block}/{part}", part == "dw"
            x = conv(n, name, x, num_output, kernel, stride if dw else 1, kernel // 2, bias=None, depthwise=dw)
            x = relu(n, f"relu{block}/{part}", bn_scale(n, f"{name}/bn", f"{name}/scale", x, train))
        channels = width
    return conv(n, "fc7", pool(n, "pool6", x, "AVE"), 1000, 1)


# MobileNet v2 bottlenecks as shicai/MobileNet-Caffe names them: (block, expansion t, output width,
# stride). As published, conv2_1 has an expand layer (t=1), and the stride 2 that the paper puts on the
# first 64-wide block (conv4_3) sits on the first 96-wide one (conv4_7): the first arXiv version of the
# paper's Table 2 (that repository's issues #50, #67, #69). Both change no final shape.
MOBILENET_V2 = (
    ("2_1", 1, 16, 1), ("2_2", 6, 24, 2), ("3_1", 6, 24, 1), ("3_2", 6, 32, 2), ("4_1", 6, 32, 1), ("4_2", 6, 32, 1),
    ("4_3", 6, 64, 1), ("4_4", 6, 64, 1), ("4_5", 6, 64, 1), ("4_6", 6, 64, 1), ("4_7", 6, 96, 2), ("5_1", 6, 96, 1),
    ("5_2", 6, 96, 1), ("5_3", 6, 160, 2), ("6_1", 6, 160, 1), ("6_2", 6, 160, 1), ("6_3", 6, 320, 1),
)  # fmt: skip


def mobilenet_v2(n: Any, data: Any, train: bool) -> Any:
    """MobileNet v2 as shicai/MobileNet-Caffe: BatchNorm tops */bn (not in place), in-place */scale,
    expand/dwise/linear per block, Eltwise block_* where shapes allow, conv6_4 (1280), pool6, fc7 (1x1)."""

    def unit(name: str, bottom: Any, num_output: int, kernel: int, stride: int = 1, dw: bool = False) -> Any:
        y = conv(n, name, bottom, num_output, kernel, stride=stride, pad=kernel // 2, bias=None, depthwise=dw)
        return bn_scale(n, f"{name}/bn", f"{name}/scale", y, train, in_place=False)

    x = relu(n, "relu1", unit("conv1", data, 32, 3, 2))
    channels = 32
    for block, t, width, stride in MOBILENET_V2:
        p = f"conv{block}/"
        y = relu(n, f"relu{block}/expand", unit(p + "expand", x, channels * t, 1))
        y = relu(n, f"relu{block}/dwise", unit(p + "dwise", y, channels * t, 3, stride, dw=True))
        y = unit(p + "linear", y, width, 1)
        if stride == 1 and width == channels:
            n[f"block_{block}"] = L.Eltwise(x, y)
            y = n[f"block_{block}"]
        x, channels = y, width
    x = relu(n, "relu6_4", unit("conv6_4", x, 1280, 1))
    return conv(n, "fc7", pool(n, "pool6", x, "AVE"), 1000, 1)


def alexnet(n: Any, data: Any, train: bool, caffenet: bool = False) -> Any:
    """AlexNet as BVLC bvlc_alexnet (norm before pool; caffenet=True: pool before norm, as
    bvlc_reference_caffenet); conv2/4/5 in two groups; the published fillers and bias constants."""
    one, g = (1.0 if caffenet else 0.1), filler("gaussian", 0.01)  # bias constant of conv2/4/5, fc6/7
    x = data
    for i, width, kernel, stride, pad, group, bias in ((1, 96, 11, 4, 0, 1, 0.0), (2, 256, 5, 1, 2, 2, one)):
        x = relu(n, f"relu{i}", conv(n, f"conv{i}", x, width, kernel, stride, pad, group, bias, g))
        if caffenet:
            x = lrn(n, f"norm{i}", pool(n, f"pool{i}", x, "MAX", 3, 2))
        else:
            x = pool(n, f"pool{i}", lrn(n, f"norm{i}", x), "MAX", 3, 2)
    for i, width, group, bias in ((3, 384, 1, 0.0), (4, 384, 2, one), (5, 256, 2, one)):
        x = relu(n, f"relu{i}", conv(n, f"conv{i}", x, width, 3, pad=1, group=group, bias=bias, weights=g))
    x = pool(n, "pool5", x, "MAX", 3, 2)
    for i in (6, 7):
        x = dropout(n, f"drop{i}", relu(n, f"relu{i}", fc(n, f"fc{i}", x, 4096, filler("gaussian", 0.005), one)), 0.5)
    return fc(n, "fc8", x, 1000, filler("gaussian", 0.01))


def caffenet(n: Any, data: Any, train: bool) -> Any:
    """CaffeNet (BVLC bvlc_reference_caffenet): AlexNet with pooling before normalization."""
    return alexnet(n, data, train, caffenet=True)


def cifar10_full(n: Any, data: Any, train: bool) -> Any:
    """Caffe's examples/cifar10/cifar10_full: three 5x5 convolutions (32, 32, 64), pools, LRN
    WITHIN_CHANNEL, ip1 (10 classes); the published fillers and learning-rate/decay multipliers."""
    lr = [{"lr_mult": 1}, {"lr_mult": 2}]
    x = conv(n, "conv1", data, 32, 5, pad=2, weights=filler("gaussian", 0.0001), param=lr)
    x = relu(n, "relu1", pool(n, "pool1", x, "MAX", 3, 2))
    x = lrn(n, "norm1", x, local_size=3, alpha=5e-05, within=True)
    x = relu(n, "relu2", conv(n, "conv2", x, 32, 5, pad=2, weights=filler("gaussian", 0.01), param=lr))
    x = lrn(n, "norm2", pool(n, "pool2", x, "AVE", 3, 2), local_size=3, alpha=5e-05, within=True)
    x = relu(n, "relu3", conv(n, "conv3", x, 64, 5, pad=2, weights=filler("gaussian", 0.01), param=[]))
    x = pool(n, "pool3", x, "AVE", 3, 2)
    n.ip1 = L.InnerProduct(
        x,
        num_output=10,
        param=[{"lr_mult": 1, "decay_mult": 250}, BIAS],
        weight_filler=filler("gaussian", 0.01),
        bias_filler={"type": "constant", "value": 0},
    )
    return n.ip1


def vgg16(n: Any, data: Any, train: bool) -> Any:
    """VGG-16 as prototxt/vgg16 (the published model of model-zoo gist 211839e770f7b538e2d8)."""
    x = data
    for stage, (width, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), 1):
        for i in range(1, convs + 1):
            name = f"conv{stage}_{i}"
            x = relu(n, f"relu{stage}_{i}", conv(n, name, x, width, 3, pad=1, weights=filler("gaussian", 0.01)))
        x = pool(n, f"pool{stage}", x, "MAX", 2, 2)
    for i in (6, 7):
        x = dropout(n, f"drop{i}", relu(n, f"relu{i}", fc(n, f"fc{i}", x, 4096, filler("gaussian", 0.005))), 0.5)
    return fc(n, "fc8", x, 1000, filler("gaussian", 0.005))


# --- inputs, heads and files --------------------------------------------------------------------


# --- nets of pytrim's own (no published Caffe file): the families the channel graph joins ------


def se_unit(n: Any, name: str, x: Any, width: int, reduction: int = 16) -> Any:
    """Squeeze-and-excitation of `x` as BVLC Caffe can write it: global pooling, 1x1 {name}_down
    (width / reduction) + ReLU, 1x1 {name}_up + Sigmoid {name}_prob, Reshape to (N, C) and a
    Scale with two bottoms (axis 0) multiplying channel by channel (SENet's own files use a
    custom Axpy layer instead)."""
    y = pool(n, f"{name}_pool", x, "AVE")
    y = relu(n, f"{name}_down_relu", conv(n, f"{name}_down", y, max(1, width // reduction), 1))
    n[f"{name}_prob"] = L.Sigmoid(conv(n, f"{name}_up", y, width, 1))
    n[f"{name}_shape"] = L.Reshape(n[f"{name}_prob"], reshape_param={"shape": {"dim": [0, -1]}})
    n[f"{name}_scale"] = L.Scale(x, n[f"{name}_shape"], scale_param={"axis": 0})
    return n[f"{name}_scale"]


def se_resnet50(n: Any, data: Any, train: bool) -> Any:
    """SE-ResNet-50 (Hu et al. 2018): ResNet-50's bottlenecks (as resnet50) with an excitation
    (se_unit, reduction 16) on each residual branch before the sum; global pooling."""
    x = conv(n, "conv1", data, 64, 7, stride=2, pad=3)
    x = relu(n, "conv1_relu", bn_scale(n, "bn_conv1", "scale_conv1", x, train))
    x = pool(n, "pool1", x, "MAX", 3, 2)
    for stage, width, blocks, stride in ((2, 64, 3, 1), (3, 128, 4, 2), (4, 256, 6, 2), (5, 512, 3, 2)):
        for i in range(blocks):
            x = bottleneck(n, f"{stage}{'abcdef'[i]}", x, width, stride if i == 0 else 1, i == 0, train, se=True)
    return fc(n, "fc1000", pool(n, "pool5", x, "AVE"), 1000, filler("msra"))


def bn_relu(n: Any, name: str, x: Any, train: bool) -> Any:
    """BatchNorm {name}_bn (top of its own: pre-activation), Scale and ReLU in place."""
    return relu(n, f"{name}_relu", bn_scale(n, f"{name}_bn", f"{name}_scale", x, train, in_place=False))


# DPN stages: output (residual) width, bottleneck width, dense increment, blocks, stride.
DPN = ((256, 96, 16, 3, 1), (512, 192, 32, 4, 2), (1024, 384, 24, 6, 2), (2048, 768, 128, 3, 2))


def dpn_block(n: Any, p: str, x: Any, paths: tuple[Any, Any], widths: tuple[int, int, int], stride: int,
              train: bool) -> tuple[Any, Any, Any]:  # fmt: skip
    """One dual-path block {p}: 1x1 / 3x3 grouped (32) / 1x1 sliced into a residual part (added
    to the residual path) and a new dense part (concatenated to the dense path)."""
    (res, dense), (out, mid, inc) = paths, widths
    y = bn_relu(n, f"{p}_a", x, train)
    y = bn_relu(n, f"{p}_b", conv(n, f"{p}_a", y, mid, 1, bias=None), train)
    y = bn_relu(n, f"{p}_c", conv(n, f"{p}_b", y, mid, 3, stride, 1, group=32, bias=None), train)
    c = conv(n, f"{p}_c", y, out + inc, 1, bias=None)
    n[f"{p}_res"], n[f"{p}_new"] = L.Slice(c, ntop=2, slice_param={"axis": 1, "slice_point": [out]})
    n[f"{p}_sum"] = L.Eltwise(res, n[f"{p}_res"])
    n[f"{p}_dense"] = L.Concat(dense, n[f"{p}_new"])
    n[f"{p}_out"] = L.Concat(n[f"{p}_sum"], n[f"{p}_dense"])
    return n[f"{p}_sum"], n[f"{p}_dense"], n[f"{p}_out"]


def dpn(n: Any, data: Any, train: bool) -> Any:
    """A dual-path net after DPN-68 (Chen et al. 2017; wider, fewer blocks in the third stage):
    pre-activation blocks (dpn_block); each stage opens with a 1x1 projection sliced into its
    residual and dense paths."""
    x = relu(n, "conv1_relu", bn_scale(n, "conv1_bn", "conv1_scale", conv(n, "conv1", data, 64, 3, 2, 1), train))
    x = pool(n, "pool1", x, "MAX", 3, 2, 1)
    for stage, (out, mid, inc, blocks, stride) in enumerate(DPN, 2):
        p = f"dpn{stage}_"
        proj = conv(n, p + "proj", bn_relu(n, p + "proj", x, train), out + 2 * inc, 1, stride, bias=None)
        n[p + "res0"], n[p + "dense0"] = L.Slice(proj, ntop=2, slice_param={"axis": 1, "slice_point": [out]})
        res, dense = n[p + "res0"], n[p + "dense0"]
        for i in range(1, blocks + 1):
            res, dense, x = dpn_block(n, f"{p}{i}", x, (res, dense), (out, mid, inc), stride if i == 1 else 1, train)
    x = pool(n, "pool5", bn_relu(n, "final", x, train), "AVE")
    return fc(n, "fc", x, 1000, filler("msra"))


def rconv(n: Any, name: str, x: Any, width: int, kernel: tuple[int, int], train: bool, stride: int = 1,
          pad: bool = True) -> Any:  # fmt: skip
    """An Inception-ResNet convolution (kernel h x w, no bias) with BatchNorm, Scale and ReLU in place."""
    kw: dict[str, Any] = {"kernel_h": kernel[0], "kernel_w": kernel[1], "bias_term": False}
    if pad:
        kw.update(pad_h=kernel[0] // 2, pad_w=kernel[1] // 2)
    if stride != 1:
        kw["stride"] = stride
    n[name] = L.Convolution(x, num_output=width, weight_filler=filler("msra"), param=[WEIGHT], **kw)
    return relu(n, f"{name}_relu", bn_scale(n, f"{name}_bn", f"{name}_scale", n[name], train))


# Inception-ResNet residual blocks: the branches' chains of (width, kernel), the residual scale.
RESIDUAL = {
    "a": ([[(32, (1, 1))], [(32, (1, 1)), (32, (3, 3))], [(32, (1, 1)), (48, (3, 3)), (64, (3, 3))]], 0.17),
    "b": ([[(192, (1, 1))], [(128, (1, 1)), (160, (1, 7)), (192, (7, 1))]], 0.1),
    "c": ([[(192, (1, 1))], [(192, (1, 1)), (224, (1, 3)), (256, (3, 1))]], 0.2),
}
# Reductions: chains (the last convolution strided) beside a 2x2 max pooling (Caffe rounds a
# pooling's size up and a convolution's down: a 3x3 stride 2 pad 1 convolution and a 2x2 stride 2
# pooling give the same size at any input).
REDUCTION = {
    "stem": [[(192, (3, 3))]],
    "a": [[(384, (3, 3))], [(256, (1, 1)), (256, (3, 3)), (384, (3, 3))]],
    "b": [
        [(256, (1, 1)), (384, (3, 3))],
        [(256, (1, 1)), (288, (3, 3))],
        [(256, (1, 1)), (288, (3, 3)), (320, (3, 3))],
    ],
}


def branches(n: Any, p: str, x: Any, chains: list, train: bool, reduce: bool = False) -> list[Any]:
    """Each chain of convolutions {p}b{i}_{j} from x (with `reduce` the last one strided)."""
    tops = []
    for b, chain in enumerate(chains):
        y = x
        for j, (width, kernel) in enumerate(chain):
            last = reduce and j == len(chain) - 1
            y = rconv(n, f"{p}b{b}_{j}", y, width, kernel, train, stride=2 if last else 1)
        tops.append(y)
    return tops


def residual_block(n: Any, p: str, x: Any, width: int, stage: str, train: bool) -> Any:
    """Concatenated branches, a linear 1x1 {p}up back to `width`, scaled (Power), added to x."""
    chains, scale = RESIDUAL[stage]
    n[p + "concat"] = L.Concat(*branches(n, p, x, chains, train))
    n[p + "scaled"] = L.Power(conv(n, p + "up", n[p + "concat"], width, 1), power_param={"scale": scale})
    n[p + "sum"] = L.Eltwise(x, n[p + "scaled"])
    return relu(n, p + "relu", n[p + "sum"])


def inception_resnet(n: Any, data: Any, train: bool) -> Any:
    """An Inception-ResNet-v2-like net (Szegedy et al. 2017; fewer blocks): a stem ending in a
    Concat of a strided convolution and a max pooling; residual blocks (residual_block) whose
    input is such a Concat; reductions concatenating convolutions and a max pooling."""
    x = rconv(n, "stem1", data, 32, (3, 3), train, stride=2, pad=False)
    x = rconv(n, "stem2", x, 32, (3, 3), train, pad=False)
    x = rconv(n, "stem3", x, 64, (3, 3), train)
    x = rconv(n, "stem4", pool(n, "stem_pool", x, "MAX", 3, 2), 80, (1, 1), train)
    x, width = rconv(n, "stem5", x, 192, (3, 3), train, pad=False), 192
    for stage, blocks in (("stem", 0), ("a", 3), ("b", 4), ("c", 2)):
        for i in range(blocks):
            x = residual_block(n, f"block_{stage}{i + 1}_", x, width, stage, train)
        if stage in REDUCTION:
            p = f"reduction_{stage}_"
            tops = branches(n, p, x, REDUCTION[stage], train, reduce=True)
            n[p + "concat"] = L.Concat(*tops, pool(n, p + "pool", x, "MAX", 2, 2))
            x, width = n[p + "concat"], width + sum(chain[-1][0] for chain in REDUCTION[stage])
    x = dropout(n, "drop", pool(n, "pool", x, "AVE"), 0.2)
    return fc(n, "classifier", x, 1000, filler("msra"))


@dataclass(frozen=True)
class Inputs:
    """What a net's data layers give it, as its published definition has it."""

    title: str  # NetParameter.name as published
    origin: str  # where the published definition is
    size: int  # input side (the crop of train_val)
    train_batch: int  # the published TRAIN batch
    mean: tuple[float, ...] = IMAGENET_MEAN  # BGR mean_value
    scale: float | None = None  # transform_param scale
    mirror: bool = True  # TRAIN mirroring (TEST never mirrors)
    crop: bool = True  # crop_size = size (False: whole images, e.g. CIFAR-10's 32x32)
    classes: int = 1000
    dataset: str = "imagenet"  # default LMDBs: data/<dataset>/train_lmdb and data/<dataset>/val_lmdb


MOBILENET_MEAN = (103.94, 116.78, 123.68)  # shicai/MobileNet-Caffe, with scale 0.017
# CIFAR-10's published net subtracts a mean image (examples/cifar10/mean.binaryproto, computed from
# the training set); without that file, its per-channel means (BGR) stand in for it.
CIFAR10_MEAN = (113.865, 122.95, 125.307)

INPUTS: dict[str, Inputs] = {
    "resnet50": Inputs("ResNet-50", "KaimingHe/deep-residual-networks prototxt/ResNet-50-deploy.prototxt", 224, 32),
    "googlenet": Inputs("GoogleNet", "BVLC Caffe models/bvlc_googlenet", 224, 32),
    # No mirroring: SqueezeNet v1.1's published train_val has none.
    "squeezenet11": Inputs("SqueezeNet_v1.1", "forresti/SqueezeNet SqueezeNet_v1.1", 227, 32, mirror=False),
    "mobilenet": Inputs(
        "MOBILENET", "shicai/MobileNet-Caffe mobilenet_deploy.prototxt", 224, 32, MOBILENET_MEAN, scale=0.017
    ),
    "mobilenet_v2": Inputs(
        "MOBILENET_V2", "shicai/MobileNet-Caffe mobilenet_v2_deploy.prototxt", 224, 32, MOBILENET_MEAN, scale=0.017
    ),
    # The BVLC AlexNet/CaffeNet subtract data/ilsvrc12/imagenet_mean.binaryproto; its channel means
    # are about 104/117/123, used here instead of the file.
    "alexnet": Inputs("AlexNet", "BVLC Caffe models/bvlc_alexnet", 227, 256),
    "caffenet": Inputs("CaffeNet", "BVLC Caffe models/bvlc_reference_caffenet", 227, 256),
    "cifar10_full": Inputs(
        "CIFAR10_full",
        "BVLC Caffe examples/cifar10/cifar10_full.prototxt",
        32,
        100,
        CIFAR10_MEAN,
        mirror=False,
        crop=False,
        classes=10,
        dataset="cifar10",
    ),
    "vgg16": Inputs("VGG_ILSVRC_16_layers", "model-zoo gist 211839e770f7b538e2d8 (as prototxt/vgg16)", 224, 32),
    "se_resnet50": Inputs("SE-ResNet-50", "pytrim's own (SENet's blocks with BVLC Caffe's Scale)", 224, 32),
    "dpn": Inputs("DPN", "pytrim's own (after DPN-68)", 224, 32),
    "inception_resnet": Inputs("Inception-ResNet", "pytrim's own (after Inception-ResNet-v2)", 224, 32),
}

# name -> builder(NetSpec, data top, train, **options) -> class-score top.
NETS: dict[str, Callable[..., Any]] = {
    "resnet50": resnet50,
    "googlenet": googlenet,
    "squeezenet11": squeezenet11,
    "mobilenet": mobilenet,
    "mobilenet_v2": mobilenet_v2,
    "alexnet": alexnet,
    "caffenet": caffenet,
    "cifar10_full": cifar10_full,
    "vgg16": vgg16,
    "se_resnet50": se_resnet50,
    "dpn": dpn,
    "inception_resnet": inception_resnet,
}

# Learnable parameters of each net (Convolution/InnerProduct weights and biases, Scale gamma/beta;
# not BatchNorm's mean/variance/factor), counted from the shapes of the published Caffe definitions
# named in INPUTS (each such file builds in pycaffe with exactly this count).
published_params: dict[str, int] = {
    # 25,557,032 as usually quoted (torchvision, Keras) + 64: the published Caffe conv1 has a bias.
    "resnet50": 25_557_096,
    # bvlc_googlenet deploy, without the auxiliary classifiers; train_val with aux=True has
    # 13,378,280 (loss1/* 3,188,840 and loss2/* 3,190,888 more), as the published train_val.
    "googlenet": 6_998_552,
    "squeezenet11": 1_235_496,  # DeepScale's SqueezeNet v1.1 (1.24M, as its README says)
    "mobilenet": 4_231_976,  # MobileNet v1 1.0-224, as the paper's 4.2M (conv without bias, BN gamma/beta)
    # 3,504,872 as the paper's MobileNet v2 1.0-224 (torchvision) + 1,088: shicai's conv2_1/expand
    # (32 x 32 1x1 convolution, 1,024, and its Scale, 64), which the paper's first block lacks.
    "mobilenet_v2": 3_505_960,
    "alexnet": 60_965_224,  # bvlc_alexnet (conv2/4/5 in 2 groups)
    "caffenet": 60_965_224,  # bvlc_reference_caffenet: the same layers as AlexNet, reordered
    "cifar10_full": 89_578,  # conv1 2,432 + conv2 25,632 + conv3 51,264 + ip1 10,250
    "vgg16": 138_357_544,  # VGG-16 as published (and as tests/test_vgg16.py's paper table)
    # pytrim's own nets: counted from their definitions. SE-ResNet-50: 28,088,024 as usually quoted
    # (Hu et al.'s 28.1M) + 64: conv1 has a bias, as resnet50's.
    "se_resnet50": 28_088_088,
    "dpn": 22_976_792,
    "inception_resnet": 18_760_264,
}


def data_layer(info: Inputs, phase: str, source: str, batch: int) -> Any:
    """A NetSpec whose only layer is the LMDB Data layer "data" (tops data, label) of one phase."""
    transform: dict[str, Any] = {"mirror": info.mirror and phase == "TRAIN", "mean_value": list(info.mean)}
    if info.crop:
        transform["crop_size"] = info.size
    if info.scale is not None:
        transform["scale"] = info.scale
    n = net_spec().NetSpec()
    n.data, n.label = L.Data(
        source=source,
        batch_size=batch,
        backend=P.Data.LMDB,
        transform_param=transform,
        include={"phase": getattr(caffe_pb2(), phase)},
        ntop=2,
    )
    return n


def build(
    name: str,
    kind: str = "deploy",
    batch: int = 1,
    train_source: str | None = None,
    test_source: str | None = None,
    test_batch: int = 50,
    train_batch: int | None = None,
    size: int | None = None,
    **options: Any,
) -> Any:
    """The NetParameter of net `name`: kind "deploy" (Input "data" [batch, 3, H, W], Softmax "prob")
        or "train_val" (TRAIN/TEST Data layers "data" reading train_source/test_source, default
        data/<dataset>/{train,val}_lmdb; train_batch default: the published one; SoftmaxWithLoss "loss",
        TEST Accuracy "accuracy" and "accuracy_top5"). `size`: another input side than the published
    one (the input, or the crop). options go to the net's builder (googlenet: aux)."""
    if name not in NETS:
        raise BadInput(f"unknown net {name!r}: one of {', '.join(NETS)}")
    if kind not in KINDS:
        raise BadInput(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    if min(batch, test_batch, train_batch or 1) < 1:
        raise BadInput("batch sizes must be at least 1")
    info, train = INPUTS[name], kind == "train_val"
    if size is not None:
        if size < 1:
            raise BadInput(f"input size {size}: at least 1")
        info = replace(info, size=size)
    train_source = train_source or f"data/{info.dataset}/train_lmdb"
    if train:
        n = data_layer(info, "TRAIN", train_source, train_batch or info.train_batch)
    else:
        n = net_spec().NetSpec()
        n.data = L.Input(shape={"dim": [batch, 3, info.size, info.size]})
    scores = NETS[name](n, n.data, train, **options)
    if train:
        n.loss = L.SoftmaxWithLoss(scores, n.label)
        n.accuracy = L.Accuracy(scores, n.label, include={"phase": caffe_pb2().TEST})
        n.accuracy_top5 = L.Accuracy(scores, n.label, include={"phase": caffe_pb2().TEST}, top_k=5)
    else:
        n.prob = L.Softmax(scores)
    body = n.to_proto()
    net = caffe_pb2().NetParameter(name=info.title)
    net.layer.extend(body.layer[:1])
    if train:  # the TEST Data layer, under the same name and tops, right after the TRAIN one
        test = data_layer(info, "TEST", test_source or f"data/{info.dataset}/val_lmdb", test_batch)
        net.layer.extend(test.to_proto().layer)
    net.layer.extend(body.layer[1:])
    return net


def text(name: str, kind: str, **kw: Any) -> str:
    """The prototxt text of build(name, kind, **kw), under a comment saying where it comes from."""
    info = INPUTS[name]
    head = (
        f"# {info.title} ({kind}), with the published layer and blob names of {info.origin}.\n"
        f"# Generated with pycaffe's NetSpec by pytrim/zoo.py (python -m pytrim zoo --net {name}).\n"
    )
    return head + text_format.MessageToString(build(name, kind, **kw))


def write(name: str, out_dir: str | Path, kinds: Iterable[str] = KINDS, **kw: Any) -> list[Path]:
    """Write <out_dir>/<kind>.prototxt for each kind, all together or none."""
    texts = {kind: text(name, kind, **kw) for kind in kinds}  # all built before anything is written
    paths = [Path(out_dir) / f"{kind}.prototxt" for kind in texts]
    with together(paths) as partials:
        for partial, body in zip(partials, texts.values(), strict=True):
            partial.write_text(body)
    return paths
