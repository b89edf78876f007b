"""What the channel-dependency graph is made of: layouts, groups, the uses of layers, and the
graph itself (a union-find over groups). How layers act on it is pytrim.graph.handlers; how
it is built from a net, pytrim.graph.build; what callers ask of it, pytrim.graph.queries.

Every blob's channel axis gets a *layout*: a list of segments, each a range of channels of
one *group*. A group is a channel index space that is cut as one; a *use* says what cutting
does to one layer (its weights' output axis, input axis, per-channel parameters, slice
points). A group that reaches the net's outputs or inputs, or passes a layer whose channel
mapping is unknown, is fixed: never cut, and the reasons are kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
