"""Build the channel-dependency graph of a net: walk the layers of one phase in order, letting
each layer's handler (pytrim.graph.handlers) act on the layouts, then tie shared weights,
fix what reaches the net's outputs, and find where each group's activations are counted."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.netcheck import probe
from pytrim.caffeio.proto import layers_in_phase, read_net
from pytrim.core.errors import UnsupportedTopology
from pytrim.graph.handlers import HANDLERS, unknown
from pytrim.graph.model import Graph


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
    for the channels that meet no ReLU, their producers' outputs (outputs <= 0 counted there)."""
    seen = {group.id: np.zeros(group.width, dtype=bool) for group in g.groups()}
    for blob, layout, _ in g.relu_points:
        offset = 0
        for s in layout.segments:
            g.group(s.group).measure.append((blob, offset, s.start, s.length, True))
            seen[g.root(s.group)][s.start : s.start + s.length] = True
            offset += s.length
    for use in g.uses:
        if use.kind != "producer":
            continue
        offset = 0
        for s in use.layout.segments:
            if not seen[g.root(s.group)][s.start : s.start + s.length].all():
                g.group(s.group).measure.append((g.tops[use.layer], offset, s.start, s.length, False))
            offset += s.length


def _parts(g: Graph) -> None:
    """The channels of each producer, depthwise convolution and Slice top that cover part of
    a group only (a joined group): cutting must leave each of them at least one."""
    for use in g.uses:
        if use.kind not in ("producer", "depthwise", "slice"):
            continue
        starts = np.cumsum([0, *use.points]).tolist() if use.kind == "slice" else [0, use.layout.width]
        roots, index = g.channels(use.layout)
        for a, b in itertools.pairwise(starts):
            for root in dict.fromkeys(roots[a:b].tolist()):
                part = index[a:b][roots[a:b] == root]
                group = g.info[root]
                if part.size < group.width and not any(np.array_equal(part, p) for _, p in group.parts):
                    group.parts.append((use.layer, part))


def _resolve_all(g: Graph) -> None:
    """Every layout onto root groups (pytrim.graph.model: joined groups are aliases)."""
    for layout in [*g.layouts.values(), *(u.layout for u in g.uses), *(r[1] for r in g.relu_points)]:
        g.resolve(layout)


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
    _resolve_all(g)
    for group in g.groups():
        if group.blocks > 1 and group.width % group.blocks:
            group.fixed.append(f"{group.width} channels cannot be split into {group.blocks} equal blocks")
    _measure_points(g)
    _parts(g)
    return g


def net_graph(net_path: str | Path, allow_inexact: bool = False) -> tuple[Any, Graph]:
    """The NetParameter and the TEST-phase channel graph of a prototxt (shapes from Caffe)."""
    net_param = read_net(net_path)
    return net_param, build_graph(net_param, probe(net_path).blobs, allow_inexact=allow_inexact)
