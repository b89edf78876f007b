"""The channel-dependency graph of a Caffe net: which channels must be cut together, and what
cutting them does to every layer.

Walking the layers of one phase in order, every blob's channel axis gets a *layout*: a list
of segments, each a range of channels of one *group*. A group is a channel index space that
is cut as one: a Convolution, InnerProduct or Deconvolution output starts one; per-channel
layers (BatchNorm, Scale, Bias, PReLU, a depthwise convolution) carry it and own parameters
along it; element-wise layers (ReLU, Pooling, Dropout, ...) carry it; Eltwise joins the
groups of its inputs into one; Concat concatenates layouts, Slice splits them, Flatten keeps
them with a spatial factor; layers sharing weights tie their groups. One handler per layer
type (HANDLERS) says this; adding a layer type means one handler. A group that reaches the
net's outputs (a loss, Softmax, Accuracy, an unconsumed blob) or its inputs, or passes a
layer whose channel mapping is unknown, is fixed: never cut, and the reason is kept.
Blob names and layer names may differ, and one name may be written in place by several
layers (../shared/caffe-notes.md): layouts follow the blob names in layer order.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytrim.errors import UnsupportedTopology
from pytrim.protoutil import layers_in_phase

PRODUCERS = ("Convolution", "InnerProduct", "Deconvolution")
ELEMENTWISE = (
    "ReLU", "Dropout", "Pooling", "TanH", "Sigmoid", "ELU", "AbsVal", "Power", "BNLL", "Threshold", "Exp",
    "Log", "Clip", "Swish",
)  # fmt: skip
DATA = ("Data", "Input", "ImageData", "HDF5Data", "MemoryData", "DummyData", "WindowData", "Python_data")
OUTPUTS = (
    "SoftmaxWithLoss", "Softmax", "Accuracy", "EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss",
    "InfogainLoss", "MultinomialLogisticLoss", "ContrastiveLoss", "ArgMax",
)  # fmt: skip


@dataclass(frozen=True)
class Segment:
    """Channels [start, start + length) of group `group`."""

    group: int
    start: int
    length: int


def elements(channels: np.ndarray, spatial: int) -> np.ndarray:
    """Channel positions -> element positions of a flattened C*H*W axis (channel-major)."""
    return (channels[:, None] * spatial + np.arange(spatial)[None, :]).ravel() if spatial > 1 else channels


@dataclass
class Layout:
    """A blob's channel axis: segments in order; after Flatten each channel spans `spatial`
    consecutive elements (Caffe flattens channel-major: index c*H*W + h*W + w)."""

    segments: list[Segment]
    spatial: int = 1

    @property
    def width(self) -> int:
        return sum(s.length for s in self.segments)


@dataclass
class Use:
    """What cutting does to one layer: `kind` producer (output axis of its weights), consumer
    (input axis), member (per-channel parameters), depthwise (both, one group), slice (its
    slice points); `layout` is the layout it acts on, `params` (blob index, axis) pairs."""

    layer: str
    type: str
    kind: str
    layout: Layout
    params: list[tuple[int, int]] = field(default_factory=list)
    groups: int = 1  # a grouped convolution's groups (consumer side)
    points: list[int] = field(default_factory=list)  # Slice: the layer's slice lengths
    bottom: str = ""  # consumer: the blob it reads
    bias: bool = False  # consumer: whether it has a bias to fold removed channels' means into


@dataclass
class Group:
    """A set of channels cut as one, with everything that depends on it."""

    id: int
    width: int
    producers: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)
    blocks: int = 1  # channels come in this many equal blocks (grouped convolution): cut evenly
    fixed: list[str] = field(default_factory=list)
    inexact: list[str] = field(default_factory=list)
    # Where its activations are counted: (blob, offset of the group's part in the blob's
    # channels, first channel of the group there, channels, whether the blob is a ReLU output).
    measure: list[tuple[str, int, int, int, bool]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.producers[0] if self.producers else f"group{self.id}"

    @property
    def trimmable(self) -> bool:
        return bool(self.producers) and not self.fixed


class Graph:
    """The channel groups of one phase of a net (built by `build_graph`)."""

    def __init__(self, shapes: dict[str, list[int]], allow_inexact: bool = False) -> None:
        self.shapes = shapes
        self.allow_inexact = allow_inexact
        self.parent: dict[int, int] = {}
        self.info: dict[int, Group] = {}
        self.layouts: dict[str, Layout] = {}
        self.read: set[str] = set()
        self.uses: list[Use] = []
        self.relu_points: list[tuple[str, Layout, int]] = []  # (blob, layout, layer index)
        self.writers: dict[str, list[tuple[int, str, bool]]] = {}  # blob -> (index, type, in place)
        self.shared: dict[str, list[tuple[str, int]]] = {}  # param name -> (layer, param index)
        self.tops: dict[str, str] = {}  # layer -> its first top
        self.index = 0

    # --- groups (union-find) --------------------------------------------------------------
    def new_group(self, width: int, producer: str | None = None, fixed: str | None = None) -> Layout:
        gid = len(self.parent)
        self.parent[gid] = gid
        self.info[gid] = Group(gid, width, [producer] if producer else [], fixed=[fixed] if fixed else [])
        return Layout([Segment(gid, 0, width)])

    def root(self, gid: int) -> int:
        while self.parent[gid] != gid:
            self.parent[gid] = self.parent[self.parent[gid]]
            gid = self.parent[gid]
        return gid

    def group(self, gid: int) -> Group:
        return self.info[self.root(gid)]

    def union(self, a: int, b: int, where: str) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra == rb:
            return
        ga, gb = self.info[ra], self.info[rb]
        if ga.width != gb.width:
            for group in (ga, gb):
                group.fixed.append(f"{where} joins channel groups of different widths ({ga.width} and {gb.width})")
            return
        keep, gone = (ga, gb) if ra < rb else (gb, ga)
        self.parent[gone.id] = keep.id
        keep.producers += gone.producers
        keep.members += gone.members
        keep.blocks = math.lcm(keep.blocks, gone.blocks)
        keep.fixed += gone.fixed
        keep.inexact += gone.inexact

    def fix(self, layout: Layout, reason: str) -> None:
        for segment in layout.segments:
            group = self.group(segment.group)
            if reason not in group.fixed:
                group.fixed.append(reason)

    def unify(self, layouts: list[Layout], where: str) -> Layout:
        """Layouts that must be cut identically (Eltwise inputs, shared weights): their groups
        are joined segment by segment; parts of groups cannot be joined."""
        first = layouts[0]
        for other in layouts[1:]:
            if [s.length for s in other.segments] != [s.length for s in first.segments]:
                self.fix(first, f"{where} joins inputs whose channel layouts differ")
                self.fix(other, f"{where} joins inputs whose channel layouts differ")
                continue
            for a, b in zip(first.segments, other.segments, strict=True):
                whole = all(s.start == 0 and s.length == self.group(s.group).width for s in (a, b))
                if not whole and (self.root(a.group), a.start) != (self.root(b.group), b.start):
                    self.fix(Layout([a, b]), f"{where} joins parts of channel groups")
                    continue
                self.union(a.group, b.group, where)
        return first

    # --- blobs --------------------------------------------------------------------------
    def layout(self, blob: str) -> Layout:
        self.read.add(blob)
        return self.layouts[blob]

    def set(self, blob: str, layout: Layout) -> None:
        self.layouts[blob] = layout

    def width(self, blob: str) -> int:
        shape = self.shapes.get(blob, [])
        return int(shape[1]) if len(shape) >= 2 else 1

    def spatial(self, blob: str) -> int:
        return int(math.prod(self.shapes.get(blob, [])[2:]))

    def fresh(self, layer: Any, reason: str) -> None:
        """Tops whose channels pytrim cannot follow: new fixed groups."""
        for top in layer.top:
            self.set(top, self.new_group(self.width(top), fixed=reason))

    # --- results -------------------------------------------------------------------------
    def groups(self) -> list[Group]:
        return [self.info[gid] for gid in sorted({self.root(g) for g in self.parent})]


# --- handlers: one per layer type ---------------------------------------------------------


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
    """One segment covering a whole group."""
    return len(layout.segments) == 1 and layout.segments[0].length == g.group(layout.segments[0].group).width


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
    """Scale (gamma, and beta with bias_term) and Bias: per channel when they act on axis 1 alone."""
    spec = layer.scale_param if layer.type == "Scale" else layer.bias_param
    if len(layer.bottom) != 1 or spec.axis != 1 or spec.num_axes != 1:
        return unknown(g, layer, "with a second bottom or on other axes")
    bias = layer.type == "Scale" and layer.scale_param.bias_term
    return member(lambda _: [0, 1] if bias else [0])(g, layer)


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
    """Flatten (or a Reshape to (N, C*H*W)): channels stay, each spanning H*W elements."""
    layout, bottom, top = g.layout(layer.bottom[0]), layer.bottom[0], layer.top[0]
    in_shape, out_shape = g.shapes.get(bottom, []), g.shapes.get(top, [])
    if out_shape == in_shape:
        return g.set(top, layout)
    if len(out_shape) == 2 and len(in_shape) >= 2 and out_shape[1] == math.prod(in_shape[1:]):
        return g.set(top, Layout(layout.segments, layout.spatial * math.prod(in_shape[2:])))
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


def _walk(g: Graph, layer: Any) -> None:
    for bottom in layer.bottom:
        if bottom not in g.layouts:
            raise UnsupportedTopology(f"layer {layer.name!r} reads blob {bottom!r}, which no earlier layer produces")
    for top in layer.top:
        g.writers.setdefault(top, []).append((g.index, layer.type, top in layer.bottom))
    for i, spec in enumerate(layer.param):
        if spec.name:
            g.shared.setdefault(spec.name, []).append((layer.name, i))
    HANDLERS.get(layer.type, unknown)(g, layer)


def _tie_shared(g: Graph) -> None:
    """Layers sharing a weight blob (`param { name: ... }`) are cut together."""
    for name, users in g.shared.items():
        layers = {layer for layer, _ in users}
        if len(layers) < 2:
            continue
        for kind in ("producer", "consumer", "member", "depthwise"):
            layouts = [u.layout for u in g.uses if u.layer in layers and u.kind == kind]
            if len(layouts) > 1:
                g.unify(layouts, f"layers sharing the weights {name!r} ({', '.join(sorted(layers))})")


def _measure_points(g: Graph) -> None:
    """Where each group's activations are counted: the ReLU outputs carrying its channels, or,
    where it meets no ReLU, its producers' outputs (outputs <= 0 counted there)."""
    for blob, layout, _ in g.relu_points:
        offset = 0
        for s in layout.segments:
            g.group(s.group).measure.append((blob, offset, s.start, s.length, True))
            offset += s.length
    for use in g.uses:
        if use.kind == "producer":
            group = g.group(use.layout.segments[0].group)
            if sum(point[3] for point in group.measure if point[4]) < group.width:
                group.measure.append((g.tops[use.layer], 0, 0, group.width, False))


def build_graph(net: Any, shapes: dict[str, list[int]], phase: str = "TEST", allow_inexact: bool = False) -> Graph:
    """The channel groups of `net` (a NetParameter) in `phase`, given Caffe's blob shapes."""
    g = Graph(shapes, allow_inexact)
    for name in net.input:
        g.set(name, g.new_group(g.width(name), fixed=f"the net's input {name!r}"))
    for g.index, layer in enumerate(layers_in_phase(net, phase)):
        g.tops.setdefault(layer.name, layer.top[0] if layer.top else "")
        _walk(g, layer)
    for blob, layout in g.layouts.items():
        if blob not in g.read:
            g.fix(layout, f"blob {blob!r} is an output of the net")
    _tie_shared(g)
    for group in g.groups():
        if group.blocks > 1 and group.width % group.blocks:
            group.fixed.append(f"{group.width} channels cannot be split into {group.blocks} equal blocks")
    _measure_points(g)
    return g


def num_output(layer: Any) -> int:
    spec = layer.inner_product_param if layer.type == "InnerProduct" else layer.convolution_param
    return int(spec.num_output)


def widths(net: Any) -> list[int]:
    """num_output of every Convolution/InnerProduct/Deconvolution layer, in order (each name once)."""
    seen: dict[str, int] = {}
    for layer in net.layer:
        if layer.type in PRODUCERS and layer.name not in seen:
            seen[layer.name] = num_output(layer)
    return list(seen.values())


def widths_text(net_path: Any) -> str:
    """The widths of a prototxt as the paper writes them: 20-50-500-10."""
    from pytrim.protoutil import read_net

    return "-".join(str(w) for w in widths(read_net(net_path)))


def consumers(graph: Graph, group: Group) -> list[Use]:
    """The layers that read a group's channels (as inputs of their weights)."""
    return [
        use
        for use in graph.uses
        if use.kind == "consumer" and any(graph.root(s.group) == group.id for s in use.layout.segments)
    ]
