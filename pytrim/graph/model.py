"""What the channel-dependency graph is made of: layouts, groups, the uses of layers, and the
graph itself (a union-find over groups). How layers act on it is pytrim.graph.handlers; how
it is built from a net, pytrim.graph.build; what callers ask of it, pytrim.graph.queries.

Every blob's channel axis gets a *layout*: a list of segments, each a range of channels of
one *group*. A group is a channel index space that is cut as one; a *use* says what cutting
does to one layer (its weights' output axis, input axis, per-channel parameters, slice
points). A group that reaches the net's outputs or inputs, or passes a layer whose channel
mapping is unknown, is fixed: never cut, and the reasons are kept.

Groups that must be cut together are joined position by position (an Eltwise of a Concat
[A, B] with a projection P: channel i of A is channel i of P, channel j of B channel 8 + j
of P): the later group becomes an *alias* of positions of the earlier one (Torch-Pruning's
index mapping), its channels that are not joined appended to the earlier group's index
space. Every layout is resolved onto root groups before it is read, so a cut names channels
of root groups only, and removing one removes it from every layer any alias reaches.
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
    # Layers owning part of a joined group's channels (a producer, a depthwise convolution, a
    # Slice's top): each keeps at least one, or it would be emptied.
    parts: list[tuple[str, np.ndarray]] = field(default_factory=list)

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
        self.parent: dict[int, int] = {}  # group -> the group it is an alias in (itself: a root)
        self.maps: dict[int, np.ndarray] = {}  # alias -> where its channels lie in its parent
        self.info: dict[int, Group] = {}
        self.layouts: dict[str, Layout] = {}
        self.read: set[str] = set()
        self.uses: list[Use] = []
        self.relu_points: list[tuple[str, Layout, int]] = []  # (blob, layout, layer index)
        self.writers: dict[str, list[tuple[int, str, bool]]] = {}  # blob -> (index, type, in place)
        self.shared: dict[str, list[tuple[str, int]]] = {}  # param name -> (layer, param index)
        self.tops: dict[str, str] = {}  # layer -> its first top
        self.index = 0

    # --- groups (aliases of ranges of other groups) ---------------------------------------
    def new_group(self, width: int, producer: str | None = None, fixed: str | None = None) -> Layout:
        gid = len(self.parent)
        self.parent[gid] = gid
        self.info[gid] = Group(gid, width, [producer] if producer else [], fixed=[fixed] if fixed else [])
        return Layout([Segment(gid, 0, width)])

    def root(self, gid: int) -> int:
        while self.parent[gid] != gid:
            gid = self.parent[gid]
        return gid

    def group(self, gid: int) -> Group:
        return self.info[self.root(gid)]

    def locate(self, gid: int) -> tuple[int, np.ndarray]:
        """The root of group `gid` and where each of its channels lies in the root's index space
        (a joined group is an alias of positions of another: `maps`)."""
        parent = self.parent[gid]
        if parent == gid:
            return gid, np.arange(self.info[gid].width)
        root, where = self.locate(parent)
        self.maps[gid], self.parent[gid] = where[self.maps[gid]], root
        return root, self.maps[gid]

    def resolve(self, layout: Layout) -> Layout:
        """Rewrite a layout's segments onto root groups (in place: the same channels), adjacent
        runs merged; every layout is resolved before it is read."""
        runs: list[Segment] = []
        for s in layout.segments:
            if s.length == 0:
                continue
            root, where = self.locate(s.group)
            index = where[s.start : s.start + s.length]
            breaks = np.flatnonzero(np.diff(index) != 1) + 1
            for part in np.split(index, breaks):
                last = runs[-1] if runs else None
                if last and last.group == root and last.start + last.length == int(part[0]):
                    runs[-1] = Segment(root, last.start, last.length + part.size)
                else:
                    runs.append(Segment(root, int(part[0]), int(part.size)))
        layout.segments = runs
        return layout

    def channels(self, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
        """Per position of a blob's channel axis: its root group and its channel there."""
        self.resolve(layout)
        if not layout.segments:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        roots = np.concatenate([np.full(s.length, s.group) for s in layout.segments])
        index = np.concatenate([np.arange(s.start, s.start + s.length) for s in layout.segments])
        return roots, index

    def join(self, a: int, at_a: np.ndarray, b: int, at_b: np.ndarray, where: str) -> None:
        """Channels `at_a` of group `a` are channels `at_b` of group `b` (pairwise): the later
        root becomes an alias of the earlier one, its other channels appended to it."""
        (ra, wa), (rb, wb) = self.locate(a), self.locate(b)
        at_a, at_b = wa[at_a], wb[at_b]
        if ra == rb:
            if not np.array_equal(at_a, at_b):
                self.fix_groups([ra], f"{where} joins different channels of one channel group")
            return
        if ra > rb:
            ra, rb, at_a, at_b = rb, ra, at_b, at_a
        keep, gone = self.info[ra], self.info[rb]
        if np.unique(at_a).size != at_a.size or np.unique(at_b).size != at_b.size:
            return self.fix_groups([ra, rb], f"{where} joins one channel to several channels of another")
        mapping = np.full(gone.width, -1)
        mapping[at_b] = at_a
        rest = np.flatnonzero(mapping < 0)
        mapping[rest] = keep.width + np.arange(rest.size)
        same = keep.width == gone.width and np.array_equal(mapping, np.arange(gone.width))
        if not same and max(keep.blocks, gone.blocks) > 1:
            return self.fix_groups([ra, rb], f"{where} joins part of a channel group a grouped convolution uses")
        self.parent[rb], self.maps[rb] = ra, mapping
        keep.width += rest.size
        keep.producers += gone.producers
        keep.members += gone.members
        keep.blocks = math.lcm(keep.blocks, gone.blocks)
        keep.fixed += [r for r in gone.fixed if r not in keep.fixed]
        keep.inexact += gone.inexact
        return None

    def fix_groups(self, gids: list[int], reason: str) -> None:
        for gid in gids:
            group = self.group(gid)
            if reason not in group.fixed:
                group.fixed.append(reason)

    def fix(self, layout: Layout, reason: str) -> None:
        self.fix_groups([s.group for s in layout.segments], reason)

    def unify(self, layouts: list[Layout], where: str) -> Layout:
        """Layouts that must be cut identically (Eltwise inputs, an excitation and what it
        scales, shared weights): channel i of each is channel i of the first, whatever the
        segments (the finest common segmentation: each piece joins the groups it comes from)."""
        first = self.resolve(layouts[0])
        for other in layouts[1:]:
            if self.resolve(other).width != first.width or other.spatial != first.spatial:
                for layout in (first, other):
                    self.fix(layout, f"{where} joins inputs whose channels differ in number or extent")
                continue
            roots_a, index_a = self.channels(first)
            roots_b, index_b = self.channels(other)
            for a, b in dict.fromkeys(zip(roots_a.tolist(), roots_b.tolist(), strict=True)):
                pair = (roots_a == a) & (roots_b == b)
                self.join(a, index_a[pair], b, index_b[pair], where)
        return self.resolve(first)

    # --- blobs --------------------------------------------------------------------------
    def layout(self, blob: str) -> Layout:
        self.read.add(blob)
        return self.resolve(self.layouts[blob])

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
