"""One handler per Caffe layer type: what the layer does to the channel layouts of the blobs it
reads and writes (pytrim.graph.model). Adding a layer type means adding one handler to
HANDLERS; a type without one is `unknown`: the groups it reads cannot be cut.

Blob names and layer names may differ, and one name may be written in place by several
layers (../shared/caffe-notes.md): layouts follow the blob names in layer order.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

from pytrim.graph.model import Graph, Layout, Segment, Use

PRODUCERS = ("Convolution", "InnerProduct", "Deconvolution")


ELEMENTWISE = (
    "ReLU", "Dropout", "Pooling", "TanH", "Sigmoid", "ELU", "AbsVal", "Power", "BNLL", "Threshold", "Exp",
    "Log", "Clip", "Swish",
)  # fmt: skip


DATA = ("Data", "Input", "ImageData", "HDF5Data", "MemoryData", "DummyData", "WindowData", "Python_data")


OUTPUTS = (
    "SoftmaxWithLoss", "Softmax", "Accuracy", "EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss",
    "InfogainLoss", "MultinomialLogisticLoss", "ContrastiveLoss", "ArgMax", "Reduction",
)  # fmt: skip


def _single(layer: Any) -> bool:
    return len(layer.bottom) == 1 and len(layer.top) == 1


def producer(g: Graph, layer: Any) -> None:
    """Convolution, InnerProduct, Deconvolution: a consumer of its input's channels and the
    producer of a new group (a depthwise convolution carries its input's group instead)."""
    if not _single(layer):
        return unknown(g, layer, "with several bottoms or tops")
    param = {"Convolution": "convolution_param", "Deconvolution": "convolution_param"}
    spec = getattr(layer, param.get(layer.type, "inner_product_param"))
    layout, width, name = g.layout(layer.bottom[0]), int(spec.num_output), layer.name
    groups = int(getattr(spec, "group", 1) or 1)
    transpose = layer.type == "InnerProduct" and spec.transpose
    if spec.axis != 1:
        g.fix(layout, f"{layer.type} {name!r} works on axis {spec.axis}")
        return g.fresh(layer, f"output of {name!r} (axis {spec.axis})")
    if layer.type == "Convolution" and groups > 1 and groups == layout.width:
        if width == groups:  # depthwise: output channel c is input channel c
            g.uses.append(Use(name, layer.type, "depthwise", layout, [(0, 0)] + ([(1, 0)] if _has_bias(spec) else [])))
            for s in layout.segments:
                g.group(s.group).members.append(name)
            return g.set(layer.top[0], layout)
        g.fix(layout, f"depthwise convolution {name!r} with a channel multiplier")
        return g.fresh(layer, f"output of depthwise convolution {name!r} with a channel multiplier")
    if layout.spatial > 1 and layer.type != "InnerProduct":
        g.fix(layout, f"{layer.type} {name!r} reads a flattened blob")
    elif groups > 1 and not _whole(g, layout):
        g.fix(layout, f"grouped {layer.type} {name!r} reads parts of channel groups")
    elif groups > 1 and layer.type == "Deconvolution":
        g.fix(layout, f"grouped Deconvolution {name!r}")
    axes = {"Convolution": (1, 0), "Deconvolution": (0, 1)}
    in_axis, out_axis = axes.get(layer.type, (0, 1) if transpose else (1, 0))
    spatial = layout.spatial * (g.spatial(layer.bottom[0]) if layer.type == "InnerProduct" else 1)
    consumer = Use(name, layer.type, "consumer", Layout(layout.segments, spatial), [(0, in_axis)], groups)
    consumer.bottom, consumer.bias = layer.bottom[0], _has_bias(spec)
    g.uses.append(consumer)
    for s in layout.segments:
        g.group(s.group).blocks = math.lcm(g.group(s.group).blocks, groups)
    out = g.new_group(width, producer=name)
    g.group(out.segments[0].group).blocks = groups
    g.uses.append(Use(name, layer.type, "producer", out, [(0, out_axis)] + ([(1, 0)] if _has_bias(spec) else [])))
    g.set(layer.top[0], out)
    return None


def _whole(g: Graph, layout: Layout) -> bool:
    """One segment covering a whole group, in order."""
    segments = g.resolve(layout).segments
    return len(segments) == 1 and segments[0].start == 0 and segments[0].length == g.group(segments[0].group).width


def _has_bias(spec: Any) -> bool:
    return bool(spec.bias_term)


def member(params: Callable[[Any], list[int]]) -> Callable[[Graph, Any], None]:
    """A per-channel layer whose parameter blobs `params(layer)` run along the channels."""

    def handle(g: Graph, layer: Any) -> None:
        if not _single(layer):
            return unknown(g, layer, "with several bottoms or tops")
        layout = g.layout(layer.bottom[0])
        blobs = params(layer)
        if blobs:
            g.uses.append(Use(layer.name, layer.type, "member", layout, [(i, 0) for i in blobs]))
            for s in layout.segments:
                g.group(s.group).members.append(layer.name)
        return g.set(layer.top[0], layout)

    return handle


def scale(g: Graph, layer: Any) -> None:
    """Scale (gamma, and beta with bias_term) and Bias: per channel when they act on axis 1
    alone, a scalar with num_axes 0; with a second bottom, `excite`."""
    spec = layer.scale_param if layer.type == "Scale" else layer.bias_param
    if len(layer.bottom) == 2 and len(layer.top) == 1:
        return excite(g, layer)
    if len(layer.bottom) == 1 and spec.num_axes == 0:
        return passthrough(g, layer)
    if len(layer.bottom) != 1 or spec.axis != 1 or spec.num_axes != 1:
        return unknown(g, layer, "on other axes than the channels")
    bias = layer.type == "Scale" and layer.scale_param.bias_term
    return member(lambda _: [0, 1] if bias else [0])(g, layer)


def excite(g: Graph, layer: Any) -> None:
    """Scale or Bias by a second bottom (squeeze-and-excitation): its axes are the first
    bottom's from `axis` on (Caffe's rule; num_axes is ignored). With axis 0 and two or more
    axes its axis 1 is the channel axis: channel c of it scales channel c, and its channels
    are joined to the first bottom's. When its axes miss the channel axis it scales every
    channel alike and the channels pass. With axis 1 its channels lie on its axis 0, which
    pytrim does not follow."""
    spec = layer.scale_param if layer.type == "Scale" else layer.bias_param
    first, second = layer.bottom
    rank, axes = len(g.shapes.get(first, [])), len(g.shapes.get(second, []))
    axis = spec.axis % rank if axes and rank else 0
    bias = layer.type == "Scale" and spec.bias_term  # a learnt bias shaped like the second bottom
    if not axis <= 1 < axis + axes:
        g.fix(g.layout(second), f"{layer.type} {layer.name!r} applies it along other axes than the channels")
        return g.set(layer.top[0], g.layout(first))
    if axis == 1:
        return unknown(g, layer, "whose second bottom holds the channels on its axis 0")
    layout = g.unify([g.layout(first), g.layout(second)], f"{layer.type} {layer.name!r}")
    if bias:
        g.uses.append(Use(layer.name, layer.type, "member", layout, [(0, 1)]))
        for s in layout.segments:
            g.group(s.group).members.append(layer.name)
    return g.set(layer.top[0], layout)


def prelu(g: Graph, layer: Any) -> None:
    if layer.prelu_param.channel_shared:
        return passthrough(g, layer)
    return member(lambda _: [0])(g, layer)


def passthrough(g: Graph, layer: Any) -> None:
    """Channel c stays channel c (element-wise layers, pooling, Split)."""
    layout = g.layout(layer.bottom[0])
    for top in layer.top:
        g.set(top, layout)
    if layer.type == "ReLU":
        g.relu_points.append((layer.top[0], layout, g.index))


def lrn(g: Graph, layer: Any) -> None:
    """LRN within a channel is per channel; across channels it mixes neighbours: removing a
    channel changes the others, so the cut is refused unless inexact cuts are allowed."""
    if layer.lrn_param.norm_region == layer.lrn_param.WITHIN_CHANNEL:
        return passthrough(g, layer)
    layout = g.layout(layer.bottom[0])
    reason = f"LRN {layer.name!r} normalises across channels: removing a channel changes its neighbours"
    if g.allow_inexact:
        for s in layout.segments:
            g.group(s.group).inexact.append(reason)
    else:
        g.fix(layout, reason + " (--allow-inexact cuts anyway and reports the deviation)")
    return passthrough(g, layer)


def eltwise(g: Graph, layer: Any) -> None:
    """SUM, PROD, MAX of same-shaped inputs: the same channels leave every input."""
    g.set(layer.top[0], g.unify([g.layout(b) for b in layer.bottom], f"Eltwise {layer.name!r}"))


def _axis(spec: Any, legacy: str) -> int:
    return int(getattr(spec, legacy)) if spec.HasField(legacy) else int(spec.axis)


def concat(g: Graph, layer: Any) -> None:
    layouts = [g.layout(b) for b in layer.bottom]
    if _axis(layer.concat_param, "concat_dim") != 1 or any(layout.spatial > 1 for layout in layouts):
        return unknown(g, layer, "on an axis other than the channels")
    return g.set(layer.top[0], Layout([s for layout in layouts for s in layout.segments]))


def _cut_layout(layout: Layout, start: int, length: int) -> Layout:
    """Channels [start, start + length) of a layout."""
    out, position = [], 0
    for s in layout.segments:
        lo, hi = max(start, position), min(start + length, position + s.length)
        if lo < hi:
            out.append(Segment(s.group, s.start + lo - position, hi - lo))
        position += s.length
    return Layout(out)


def slice_(g: Graph, layer: Any) -> None:
    layout, spec = g.layout(layer.bottom[0]), layer.slice_param
    if _axis(spec, "slice_dim") != 1 or layout.spatial > 1:
        return unknown(g, layer, "on an axis other than the channels")
    points = list(spec.slice_point)
    if not points:
        step = layout.width // len(layer.top)
        points = [step * i for i in range(1, len(layer.top))]
    bounds = [0, *points, layout.width]
    lengths = [b - a for a, b in itertools.pairwise(bounds)]
    for top, start, length in zip(layer.top, bounds[:-1], lengths, strict=True):
        g.set(top, _cut_layout(layout, start, length))
    g.uses.append(Use(layer.name, layer.type, "slice", layout, points=lengths))
    return None


def flatten(g: Graph, layer: Any) -> None:
    """Flatten or Reshape keeping the batch axis: the channels stay where the channel axis
    stays and only the axes after it change (trailing 1-dimensions dropped or added, H and W
    merged); to (N, C*H*W) each channel spans H*W elements, and back to (N, C, H, W) again."""
    layout, bottom, top = g.layout(layer.bottom[0]), layer.bottom[0], layer.top[0]
    in_shape, out_shape = g.shapes.get(bottom, []), g.shapes.get(top, [])
    if out_shape == in_shape:
        return g.set(top, layout)
    if len(out_shape) < 2 or len(in_shape) < 2 or out_shape[0] != in_shape[0]:
        return unknown(g, layer, f"to shape {tuple(out_shape)}")
    rest_in, rest_out = math.prod(in_shape[2:]), math.prod(out_shape[2:])
    if out_shape[1] == in_shape[1] and rest_in == rest_out:
        return g.set(top, layout)
    if len(out_shape) == 2 and out_shape[1] == in_shape[1] * rest_in:
        return g.set(top, Layout(layout.segments, layout.spatial * rest_in))
    if len(in_shape) == 2 and out_shape[1] == layout.width and rest_out == layout.spatial:
        return g.set(top, Layout(layout.segments))
    return unknown(g, layer, f"to shape {tuple(out_shape)}")


def crop(g: Graph, layer: Any) -> None:
    """Crop on the spatial axes keeps channels (the second bottom only gives the size)."""
    if layer.crop_param.axis < 2:
        return unknown(g, layer, "on the channel axis")
    layout = g.layout(layer.bottom[0])
    g.layout(layer.bottom[1])
    return g.set(layer.top[0], layout)


def data(g: Graph, layer: Any) -> None:
    g.fresh(layer, f"the net's input ({layer.type} {layer.name!r})")


def output(g: Graph, layer: Any) -> None:
    for bottom in layer.bottom:
        g.fix(g.layout(bottom), f"feeds {layer.type} layer {layer.name!r}: its outputs are the net's outputs")
    g.fresh(layer, f"output of {layer.type} {layer.name!r}")


def silence(g: Graph, layer: Any) -> None:
    for bottom in layer.bottom:
        g.layout(bottom)


def unknown(g: Graph, layer: Any, detail: str = "") -> None:
    what = f"{layer.type} layer {layer.name!r}{' ' + detail if detail else ''}"
    for bottom in layer.bottom:
        if bottom in g.layouts:
            g.fix(g.layout(bottom), f"passes {what}, whose channel mapping pytrim does not know")
    g.fresh(layer, f"output of {what}")


HANDLERS: dict[str, Callable[[Graph, Any], None]] = {
    **{t: producer for t in PRODUCERS},
    **{t: passthrough for t in ELEMENTWISE},
    **{t: data for t in DATA},
    **{t: output for t in OUTPUTS},
    "Split": passthrough,
    "BatchNorm": member(lambda _: [0, 1]),  # mean, variance; blob 2 is the scalar moving-average factor
    "Scale": scale,
    "Bias": scale,
    "PReLU": prelu,
    "LRN": lrn,
    "Eltwise": eltwise,
    "Concat": concat,
    "Slice": slice_,
    "Flatten": flatten,
    "Reshape": flatten,
    "Crop": crop,
    "Silence": silence,
}
