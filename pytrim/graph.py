"""The topology that trimming needs, read from a NetParameter (caffe_pb2 alone).

Cutting output channel c of a layer removes row c of its weights and bias entry c, and the
matching inputs of every layer that consumes that output. This module follows the output
blob through layers that keep channels where they are (ReLU, Pooling, Dropout; in place or
not) to its consumers (Convolution, InnerProduct), and refuses, naming the layer, every
topology whose channel mapping it does not know (Eltwise, Concat, BatchNorm/Scale, LRN,
grouped convolution, a classifier feeding the loss, ...). Blob names and layer names may
differ; a name may be written in place by several layers (see ../shared/caffe-notes.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pytrim.errors import UnsupportedTopology

TRIMMABLE = ("Convolution", "InnerProduct")
# Layers that keep channel c at channel c and have no weights.
PASS_THROUGH = ("ReLU", "Pooling", "Dropout")
# Layers that may read any blob without changing what trimming must do.
IGNORED = ("Silence",)
OUTPUT_TYPES = (
    "SoftmaxWithLoss",
    "Softmax",
    "Accuracy",
    "EuclideanLoss",
    "SigmoidCrossEntropyLoss",
    "HingeLoss",
    "InfogainLoss",
    "MultinomialLogisticLoss",
    "ContrastiveLoss",
)


@dataclass
class Consumer:
    """A layer that reads the trimmed channels: its input axis loses the removed channels."""

    layer: str
    type: str


@dataclass
class TrimSite:
    """One trimmable layer: its output blobs (the channel-preserving path) and its consumers."""

    layer: str
    type: str
    width: int
    blobs: list[str]
    consumers: list[Consumer]


def layer_by_name(net: Any, name: str) -> Any:
    """The first layer called `name` (train_val may repeat names across phases)."""
    for layer in net.layer:
        if layer.name == name:
            return layer
    raise KeyError(name)


def num_output(layer: Any) -> int:
    if layer.type == "Convolution":
        return int(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return int(layer.inner_product_param.num_output)
    raise UnsupportedTopology(f"layer {layer.name!r} ({layer.type}) has no num_output to trim")


def check_trimmable(layer: Any) -> None:
    """Refuse layer settings whose weight layout is not [out, in, ...] with one group."""
    if layer.type not in TRIMMABLE:
        raise UnsupportedTopology(
            f"layer {layer.name!r} is a {layer.type}: only Convolution and InnerProduct layers can be trimmed"
        )
    if layer.type == "Convolution":
        if layer.convolution_param.group > 1:
            raise UnsupportedTopology(
                f"layer {layer.name!r}: grouped convolution (group {layer.convolution_param.group}) "
                "is not supported yet"
            )
        if layer.convolution_param.axis != 1:
            raise UnsupportedTopology(f"layer {layer.name!r}: convolution axis other than 1 is not supported")
    else:
        if layer.inner_product_param.transpose:
            raise UnsupportedTopology(f"layer {layer.name!r}: InnerProduct with transpose is not supported yet")
        if layer.inner_product_param.axis != 1:
            raise UnsupportedTopology(f"layer {layer.name!r}: InnerProduct axis other than 1 is not supported")
    if len(layer.bottom) != 1 or len(layer.top) != 1:
        raise UnsupportedTopology(f"layer {layer.name!r}: only one bottom and one top are supported")


def trim_site(net: Any, name: str) -> TrimSite:
    """Follow the output of layer `name` to its consumers, refusing what cannot be followed."""
    names = [layer.name for layer in net.layer]
    if name not in names:
        raise UnsupportedTopology(f"the net has no layer {name!r}")
    producer = layer_by_name(net, name)
    check_trimmable(producer)
    start = names.index(name)
    live = {producer.top[0]}
    blobs = [producer.top[0]]
    consumers: list[Consumer] = []
    for layer in list(net.layer)[start + 1 :]:
        if layer.name == name:  # the same layer repeated for another phase
            continue
        reads = [b for b in layer.bottom if b in live]
        if not reads:
            # A layer writing a live name without reading it ends that blob's life.
            live.difference_update(layer.top)
            continue
        if layer.type in PASS_THROUGH or layer.type in IGNORED:
            if layer.type in PASS_THROUGH:
                for top in layer.top:
                    if top not in live:
                        live.add(top)
                        blobs.append(top)
            continue
        if layer.type in TRIMMABLE:
            check_trimmable(layer)
            if layer.name not in [c.layer for c in consumers]:
                consumers.append(Consumer(layer.name, layer.type))
            live.difference_update(t for t in layer.top if t not in layer.bottom)
            continue
        if layer.type in OUTPUT_TYPES:
            raise UnsupportedTopology(
                f"layer {name!r} feeds {layer.type} layer {layer.name!r}: its outputs are the net's outputs "
                "(classes), which cannot be trimmed"
            )
        raise UnsupportedTopology(
            f"layer {name!r} feeds {layer.type} layer {layer.name!r}, which trimming does not support yet "
            f"(supported on the path: {', '.join(PASS_THROUGH)}; consumers: {', '.join(TRIMMABLE)})"
        )
    if not consumers:
        raise UnsupportedTopology(f"layer {name!r}: no Convolution or InnerProduct layer consumes its output")
    return TrimSite(name, producer.type, num_output(producer), blobs, consumers)


def relu_outputs(net: Any) -> dict[str, str]:
    """For each trimmable layer whose output goes through a ReLU: layer name -> ReLU output blob.

    Follows in-place and separate-top ReLUs, through Dropout/Pooling that come first.
    """
    found: dict[str, str] = {}
    producers: dict[str, str] = {}  # blob -> trimmable layer whose channels it carries
    for layer in net.layer:
        sources = [producers[b] for b in layer.bottom if b in producers]
        if layer.type == "ReLU" and sources:
            found.setdefault(sources[0], layer.top[0])
        if layer.type in TRIMMABLE:
            for top in layer.top:
                producers[top] = layer.name
        elif layer.type in PASS_THROUGH and sources:
            for top in layer.top:
                producers[top] = sources[0]
        else:
            for top in layer.top:
                producers.pop(top, None)
    return found


def trimmable_layers(net: Any) -> list[str]:
    """Conv/IP layers (in net order, each name once) whose output can be trimmed."""
    result: list[str] = []
    for layer in net.layer:
        if layer.type in TRIMMABLE and layer.name not in result:
            try:
                trim_site(net, layer.name)
            except UnsupportedTopology:
                continue
            result.append(layer.name)
    return result


def widths(net: Any) -> list[int]:
    """num_output of every Convolution/InnerProduct layer, in order (each name once)."""
    seen: dict[str, int] = {}
    for layer in net.layer:
        if layer.type in TRIMMABLE and layer.name not in seen:
            seen[layer.name] = num_output(layer)
    return list(seen.values())


def widths_text(net_path: Any) -> str:
    """The widths of a prototxt as the paper writes them: 20-50-500-10."""
    from pytrim.protoutil import read_net

    return "-".join(str(w) for w in widths(read_net(net_path)))
