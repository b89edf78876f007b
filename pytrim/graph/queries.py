"""What the rest of pytrim asks of a channel-dependency graph: the group a layer belongs to,
the trimmable groups, the layers that read a group, the kept positions of a blob's channels
under a cut, coverage, and the widths of a net."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from pytrim.caffeio.proto import read_net
from pytrim.core.errors import UnsupportedTopology
from pytrim.graph.handlers import PRODUCERS
from pytrim.graph.model import Graph, Group, Layout, Use


def group_of(graph: Graph, layer: str) -> Group:
    """The group a layer's output channels belong to, refused with its reasons if fixed."""
    for use in graph.uses:
        if use.layer == layer and use.kind in ("producer", "member", "depthwise"):
            group = graph.group(use.layout.segments[0].group)
            if group.fixed:
                raise UnsupportedTopology(f"layer {layer!r} cannot be trimmed: {'; '.join(group.fixed)}")
            return group
    raise UnsupportedTopology(f"the net has no layer {layer!r} with channels to trim")


def trimmable(graph: Graph) -> dict[str, Group]:
    """Trimmable groups by name (their first producer)."""
    return {group.name: group for group in graph.groups() if group.trimmable}


def groups_of(graph: Graph, layers: list[str] | None = None) -> dict[str, Group]:
    """The groups to measure: those of `layers` (any producer or member name), or every
    trimmable group; keyed by the name asked for (default: the group's name)."""
    if not layers:
        return trimmable(graph)
    return {name: group_of(graph, name) for name in layers}


def groups_having(graph: Graph, layers: list[str]) -> dict[str, Group]:
    """The channel group of each layer that has one (not the classifier)."""
    groups = {}
    for name in layers:
        with contextlib.suppress(UnsupportedTopology):
            groups[name] = group_of(graph, name)
    return groups


def consumers(graph: Graph, group: Group) -> list[Use]:
    """The layers that read a group's channels (as inputs of their weights)."""
    return [
        use
        for use in graph.uses
        if use.kind == "consumer" and any(graph.root(s.group) == group.id for s in use.layout.segments)
    ]


def rows_of(graph: Graph, layer: str) -> np.ndarray:
    """The group channels a producer's output rows are, row by row (all of them but for a
    producer joined to part of a group: pytrim.graph.model)."""
    use = next(u for u in graph.uses if u.layer == layer and u.kind == "producer")
    return graph.channels(use.layout)[1]


def read_by(graph: Graph, use: Use, group: Group, used: np.ndarray) -> np.ndarray:
    """Which channels of `group` a consumer reads, from `used` (its weights' mask or values,
    input axis moved to 1): a channel is read when any weight reading it is non-zero."""
    roots, index = graph.channels(use.layout)
    per = used.reshape(used.shape[0], use.layout.width, -1).any(axis=(0, 2))
    read = np.zeros(group.width, dtype=bool)
    read[index[roots == group.id]] = per[roots == group.id]
    return read


def positions(graph: Graph, layout: Layout, kept: dict[int, np.ndarray]) -> np.ndarray | None:
    """Kept positions along a blob's channel axis, or None when no group of it is cut."""
    if not any(graph.root(s.group) in kept for s in layout.segments):
        return None
    out, offset = [], 0
    for s in layout.segments:
        channels = kept.get(graph.root(s.group), np.arange(graph.group(s.group).width))
        inside = channels[(channels >= s.start) & (channels < s.start + s.length)]
        out.append(inside - s.start + offset)
        offset += s.length
    return np.concatenate(out)


def coverage(graph: Graph, net: Any) -> dict[str, Any]:
    """Which Convolution/InnerProduct layers can be trimmed (as producers or members of a
    trimmable group), and why the others cannot."""
    layers = [layer.name for layer in net.layer if layer.type in ("Convolution", "InnerProduct", "Deconvolution")]
    layers = list(dict.fromkeys(layers))
    refused: dict[str, str] = {}
    for name in layers:
        try:
            group_of(graph, name)
        except UnsupportedTopology as exc:
            refused[name] = str(exc).split(": ", 1)[-1]
    return {"conv_ip_layers": len(layers), "trimmable": len(layers) - len(refused), "refused": refused}


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
    return "-".join(str(w) for w in widths(read_net(net_path)))


def neighbours(graph: Graph) -> dict[str, set[str]]:
    """Trimmable groups that touch: a layer reads the channels of one and writes the other's
    (a convolution after a convolution, through BatchNorm, pooling, Concat or a sum)."""
    names = {group.id: group.name for group in graph.groups() if group.trimmable}
    writes: dict[str, set[int]] = {}
    for use in graph.uses:
        if use.kind == "producer":
            writes.setdefault(use.layer, set()).add(graph.root(use.layout.segments[0].group))
    touching: dict[str, set[str]] = {name: set() for name in names.values()}
    for use in graph.uses:
        if use.kind != "consumer":
            continue
        for read in {graph.root(s.group) for s in use.layout.segments}:
            for written in writes.get(use.layer, set()):
                if read != written and read in names and written in names:
                    touching[names[read]].add(names[written])
                    touching[names[written]].add(names[read])
    return touching
