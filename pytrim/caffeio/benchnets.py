"""pytrim's Fashion-MNIST benchmark nets beyond LeNet chains, generated with pycaffe's NetSpec:
the topologies the trimming loop must survive, small enough to train on two cores.

    resnet_fm      a CIFAR-style ResNet: conv1 (stride 2) + three stages of one basic block each
                   (32, 64, 128 channels; BatchNorm + Scale, Eltwise SUM, 1x1 projection
                   shortcuts where the width or size changes), global average pooling, fc (10)
    mobilenet_fm   MobileNet v2-style inverted residual blocks: conv1 (stride 2), blocks of a 1x1
                   expansion, a 3x3 depthwise convolution and a linear 1x1 projection, residual
                   Eltwise where shapes allow, a 1x1 head (128), global average pooling, fc (10)
    squeezenet_fm  SqueezeNet-style fire modules (a 1x1 squeeze, then 1x1 and 3x3 expands joined
                   by Concat), with BatchNorm + Scale, a 1x1 classifier convolution (no ReLU on the
                   class scores) and global average pooling
    seresnet_fm    resnet_fm with squeeze-and-excitation on each block's branch: global pooling,
                   a 1x1 reduction to a quarter of the channels + ReLU, a 1x1 expansion + Sigmoid,
                   Reshape to (N, C), Scale with two bottoms (axis 0) before the sum
    densenet_fm    DenseNet-style: conv1 (24, stride 2), three dense blocks of four pre-activation layers
                   (BatchNorm + Scale, ReLU, 3x3 convolution of 12 channels, each output joined to
                   the block's input by Concat), transitions (BatchNorm, ReLU, 1x1 convolution to
                   half the channels, average pooling), global average pooling, fc (10)

Their BatchNorm layers average statistics with moving_average_fraction 0.9 (not Caffe's
0.999): with a few thousand iterations at a high rate the slower average lags the weights and
the TEST phase falls far behind (measured: 26.8% against 92.3% validation top-1 for
resnet_fm). Inputs are 28x28 grey images scaled by 1/256, as LeNet's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from pytrim.caffeio.env import caffe_pb2
from pytrim.caffeio.zoo import KINDS, L, P, conv, fc, filler, net_spec, pool, relu, se_unit
from pytrim.core.errors import BadInput
from pytrim.core.files import together

BN = {"moving_average_fraction": 0.9}


def unit(n: Any, name: str, bottom: Any, out: int, kernel: int, stride: int = 1, depthwise: bool = False,
         in_place: bool = True) -> Any:  # fmt: skip
    """Convolution `name` (no bias) -> BatchNorm `name`/bn -> Scale `name`/scale (in place)."""
    y = conv(n, name, bottom, out, kernel, stride=stride, pad=kernel // 2, bias=None, depthwise=depthwise)
    n[f"{name}/bn"] = L.BatchNorm(y, in_place=in_place, batch_norm_param=BN)
    n[f"{name}/scale"] = L.Scale(n[f"{name}/bn"], in_place=True, bias_term=True)
    return n[f"{name}/scale"]


def resnet_fm(n: Any, data: Any, se: bool = False) -> Any:
    """conv1 (32, stride 2) and stages res1 (32), res2 (64, stride 2), res3 (128, stride 2) of one
    basic block (with `se`, an excitation on each block's branch: seresnet_fm)."""
    x, channels = relu(n, "conv1/relu", unit(n, "conv1", data, 32, 3, 2)), 32
    for stage, width in enumerate((32, 64, 128), 1):
        stride, block = (1 if stage == 1 else 2), f"res{stage}"
        y = relu(n, f"{block}_a/relu", unit(n, f"{block}_a", x, width, 3, stride))
        y = unit(n, f"{block}_b", y, width, 3)
        y = se_unit(n, f"{block}_se", y, width, 4) if se else y
        shortcut = x if stride == 1 and width == channels else unit(n, f"{block}_proj", x, width, 1, stride)
        n[block] = L.Eltwise(shortcut, y)
        x, channels = relu(n, f"{block}/relu", n[block]), width
    return fc(n, "fc", pool(n, "pool", x, "AVE"), 10, filler("msra"))


# (expansion, output channels, blocks, stride of the first)
MOBILENET_FM = ((1, 16, 1, 1), (4, 24, 2, 1), (4, 32, 2, 2))


def mobilenet_fm(n: Any, data: Any) -> Any:
    """conv1 (16, stride 2), inverted residual blocks (MOBILENET_FM), head (128)."""
    x = relu(n, "conv1/relu", unit(n, "conv1", data, 16, 3, 2, in_place=False))
    channels = 16
    for stage, (expansion, width, blocks, first_stride) in enumerate(MOBILENET_FM, 1):
        for index in range(blocks):
            stride, p = (first_stride if index == 0 else 1), f"block{stage}_{index + 1}/"
            y = relu(n, p + "expand/relu", unit(n, p + "expand", x, channels * expansion, 1, in_place=False))
            y = relu(n, p + "dwise/relu", unit(n, p + "dwise", y, channels * expansion, 3, stride, True, False))
            y = unit(n, p + "linear", y, width, 1, in_place=False)
            if stride == 1 and width == channels:
                n[p + "sum"] = L.Eltwise(x, y)
                y = n[p + "sum"]
            x, channels = y, width
    x = relu(n, "head/relu", unit(n, "head", x, 128, 1, in_place=False))
    return fc(n, "fc", pool(n, "pool", x, "AVE"), 10, filler("msra"))


def fire(n: Any, name: str, x: Any, squeeze: int, expand: int) -> Any:
    """A fire module: a 1x1 squeeze, then 1x1 and 3x3 expands joined by Concat (each with
    BatchNorm + Scale and a ReLU)."""
    s = relu(n, f"{name}/squeeze/relu", unit(n, f"{name}/squeeze", x, squeeze, 1))
    e1 = relu(n, f"{name}/expand1x1/relu", unit(n, f"{name}/expand1x1", s, expand, 1))
    e3 = relu(n, f"{name}/expand3x3/relu", unit(n, f"{name}/expand3x3", s, expand, 3))
    n[f"{name}/concat"] = L.Concat(e1, e3)
    return n[f"{name}/concat"]


def squeezenet_fm(n: Any, data: Any) -> Any:
    """conv1 (32), pool, fire2-3 (16/32+32), pool, fire4-5 (32/64+64), conv10 (10, no ReLU),
    global average pooling."""
    x = relu(n, "conv1/relu", unit(n, "conv1", data, 32, 3))
    x = pool(n, "pool1", x, "MAX", 2, 2)
    x = fire(n, "fire3", fire(n, "fire2", x, 16, 32), 16, 32)
    x = pool(n, "pool3", x, "MAX", 2, 2)
    x = fire(n, "fire5", fire(n, "fire4", x, 32, 64), 32, 64)
    x = conv(n, "conv10", x, 10, 1, weights=filler("gaussian", 0.01))
    return pool(n, "pool10", x, "AVE")


DENSENET_FM = (4, 4, 4)  # layers per dense block
GROWTH = 12


def pre_activation(n: Any, name: str, x: Any) -> Any:
    """BatchNorm `name`/bn (its own top: the blob it reads is a Concat other layers read too) ->
    Scale -> ReLU, in place."""
    n[f"{name}/bn"] = L.BatchNorm(x, in_place=False, batch_norm_param=BN)
    n[f"{name}/scale"] = L.Scale(n[f"{name}/bn"], in_place=True, bias_term=True)
    return relu(n, f"{name}/relu", n[f"{name}/scale"])


def densenet_fm(n: Any, data: Any) -> Any:
    """conv1 (24), dense blocks of DENSENET_FM pre-activation layers of GROWTH channels joined by
    Concat, transitions to half the channels with average pooling, global pooling, fc."""
    x, channels = conv(n, "conv1", data, 24, 3, stride=2, pad=1, bias=None), 24
    for block, layers in enumerate(DENSENET_FM, 1):
        for index in range(1, layers + 1):
            name = f"dense{block}_{index}"
            y = conv(n, name, pre_activation(n, name, x), GROWTH, 3, pad=1, bias=None)
            n[f"{name}/concat"] = L.Concat(x, y)
            x, channels = n[f"{name}/concat"], channels + GROWTH
        if block < len(DENSENET_FM):
            t = conv(n, f"trans{block}", pre_activation(n, f"trans{block}", x), channels // 2, 1, bias=None)
            x, channels = pool(n, f"trans{block}/pool", t, "AVE", 2, 2), channels // 2
    return fc(n, "fc", pool(n, "pool", pre_activation(n, "final", x), "AVE"), 10, filler("msra"))


def seresnet_fm(n: Any, data: Any) -> Any:
    """resnet_fm with squeeze-and-excitation (reduction 4) on each block's branch."""
    return resnet_fm(n, data, se=True)


NETS: dict[str, Callable[[Any, Any], Any]] = {
    "resnet_fm": resnet_fm,
    "seresnet_fm": seresnet_fm,
    "mobilenet_fm": mobilenet_fm,
    "squeezenet_fm": squeezenet_fm,
    "densenet_fm": densenet_fm,
}
TITLES = {"resnet_fm": "ResNet-8 (Fashion-MNIST)", "seresnet_fm": "SE-ResNet-8 (Fashion-MNIST)",
          "mobilenet_fm": "MobileNet v2-style (Fashion-MNIST)",
          "squeezenet_fm": "SqueezeNet-style (Fashion-MNIST)",
          "densenet_fm": "DenseNet-style (Fashion-MNIST)"}  # fmt: skip


def data_layer(phase: str, source: str, batch: int) -> Any:
    """A NetSpec whose only layer is the LMDB Data layer "data" (tops data, label) of one phase."""
    n = net_spec().NetSpec()
    phased = {"phase": getattr(caffe_pb2(), phase)}
    n.data, n.label = L.Data(source=source, batch_size=batch, backend=P.Data.LMDB, ntop=2,
                             transform_param={"scale": 0.00390625}, include=phased)  # fmt: skip
    return n


def build(name: str, kind: str = "deploy", data: str = "data/lenet") -> Any:
    """The NetParameter of net `name`: "deploy" (Input "data" [1, 1, 28, 28], Softmax "prob") or
    "train_val" (Data layers on <data>/train_lmdb (batch 64) and <data>/test_lmdb (batch 100),
    SoftmaxWithLoss "loss", TEST Accuracy "accuracy")."""
    if name not in NETS:
        raise BadInput(f"unknown net {name!r}: one of {', '.join(NETS)}")
    if kind not in KINDS:
        raise BadInput(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    train = kind == "train_val"
    n = data_layer("TRAIN", f"{data}/train_lmdb", 64) if train else net_spec().NetSpec()
    if not train:
        n.data = L.Input(shape={"dim": [1, 1, 28, 28]})
    scores = NETS[name](n, n.data)
    if train:
        n.loss = L.SoftmaxWithLoss(scores, n.label)
        n.accuracy = L.Accuracy(scores, n.label, include={"phase": caffe_pb2().TEST})
    else:
        n.prob = L.Softmax(scores)
    body = n.to_proto()
    net = caffe_pb2().NetParameter(name=name)
    net.layer.extend(body.layer[:1])
    if train:
        net.layer.extend(data_layer("TEST", f"{data}/test_lmdb", 100).to_proto().layer)
    net.layer.extend(body.layer[1:])
    return net


def write(name: str, out_dir: str | Path, kinds: Iterable[str] = KINDS) -> list[Path]:
    """Write <out_dir>/<kind>.prototxt for each kind, all together or none."""
    head = f"# {TITLES.get(name, name)}: a pytrim benchmark net, generated with pycaffe's NetSpec by\n"
    head += f"# pytrim/caffeio/benchnets.py (python -m pytrim zoo --nets {name}).\n"
    texts = {kind: head + text_format.MessageToString(build(name, kind)) for kind in kinds}
    paths = [Path(out_dir) / f"{kind}.prototxt" for kind in texts]
    with together(paths) as partials:
        for partial, body in zip(partials, texts.values(), strict=True):
            partial.write_text(body)
    return paths
