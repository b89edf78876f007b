"""A cut as data (a *recipe*, as Distiller's thinning recipes): per layer how its settings
change (num_output; a depthwise convolution's group; a Slice's points) and, per parameter
blob, which indices it keeps along which axis. It is computed from the channel-dependency
graph and the selections (which channels of each group stay), checked in full before
anything is written, saved beside a cut (recipe.json) and replayed: `cut` applies it to the
weights, and `verify` replays it on the original weights and requires the trimmed caffemodel
to hold exactly the result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.core.errors import BadInput
from pytrim.core.files import read_json
from pytrim.graph.model import Graph, Group, Use
from pytrim.graph.queries import group_of, positions
from pytrim.surgery.choose import Selection


@dataclass
class Op:
    """Keep indices `keep` along `axis` of a parameter blob. With `spatial` > 1 the axis holds
    channels x spatial elements (an InnerProduct after a flatten) and `keep` names channels;
    with `groups` > 1 it is a grouped convolution's input axis and `keep` holds, block after
    block, the kept indices local to each block."""

    axis: int
    keep: list[int]
    spatial: int = 1
    groups: int = 1


@dataclass
class LayerCut:
    """What a cut does to one layer."""

    num_output: int | None = None
    group: int | None = None
    slice_point: list[int] | None = None
    blobs: dict[int, list[Op]] = field(default_factory=dict)
    add_bias: bool = False  # --fold-mean gave a consumer without a bias one


def apply_op(array: np.ndarray, op: Op) -> np.ndarray:
    """One Op on one array."""
    keep = np.asarray(op.keep, dtype=np.int64)
    if op.groups > 1:
        blocks = np.split(array, op.groups, axis=0)
        per = len(keep) // op.groups
        return np.concatenate([np.take(b, keep[i * per : (i + 1) * per], axis=1) for i, b in enumerate(blocks)], axis=0)
    if op.spatial > 1:
        shape = array.shape
        split = (*shape[: op.axis], shape[op.axis] // op.spatial, op.spatial, *shape[op.axis + 1 :])
        kept = np.take(array.reshape(split), keep, axis=op.axis)
        return kept.reshape(*shape[: op.axis], len(keep) * op.spatial, *shape[op.axis + 1 :])
    return np.take(array, keep, axis=op.axis)


def apply_ops(arrays: list[np.ndarray], cut: LayerCut) -> list[np.ndarray]:
    out = list(arrays)
    for index, ops in cut.blobs.items():
        for op in ops:
            out[index] = apply_op(out[index], op)
    return out


def selection_of(graph: Graph, selections: dict[str, Selection]) -> dict[int, np.ndarray]:
    """group id -> sorted kept channels, checked against the group (width, blocks, not empty)."""
    kept: dict[int, np.ndarray] = {}
    for name, selection in selections.items():
        group = group_of(graph, name)
        if group.id in kept:
            raise BadInput(f"two selections name the same channel group ({group.name}): {name!r}")
        check_selection(group, name, selection)
        kept[group.id] = np.asarray(selection.keep, dtype=np.int64)
    return kept


def check_selection(group: Group, name: str, selection: Selection) -> None:
    keep = np.asarray(selection.keep)
    if selection.width != group.width:
        raise BadInput(f"selection for {name!r} is for {selection.width} channels, its group has {group.width}")
    if keep.size == 0:
        raise BadInput(f"selection would empty layer {name!r}")
    if keep.min() < 0 or keep.max() >= group.width or np.unique(keep).size != keep.size:
        raise BadInput(f"selection for {name!r} has invalid or repeated indices")
    for owner, part in group.parts:
        if not np.isin(part, keep).any():
            raise BadInput(f"selection for {name!r} would empty layer {owner!r} (its channels of the joined group)")
    if group.blocks > 1:
        counts = np.bincount(keep // (group.width // group.blocks), minlength=group.blocks)
        if len(set(counts.tolist())) != 1 or counts.min() == 0:
            raise BadInput(
                f"selection for {name!r} keeps {counts.tolist()} channels of its {group.blocks} blocks: a grouped "
                "convolution needs the same number from every block (and at least one)"
            )


def layer_cut(graph: Graph, use: Use, keep: np.ndarray, cut: LayerCut) -> None:
    """Add what one use of a layer does to its cut."""
    if use.kind == "producer":
        cut.num_output = int(keep.size)
    if use.kind == "depthwise":
        cut.num_output = cut.group = int(keep.size)
    if use.kind == "slice":
        starts = _starts(use.points)
        lengths = [int(np.count_nonzero((keep >= a) & (keep < a + n))) for a, n in zip(starts, use.points, strict=True)]
        cut.slice_point = list(np.cumsum(lengths[:-1]).tolist())
        return
    for blob, axis in use.params:
        if use.groups > 1:
            per = use.layout.width // use.groups
            local = [int(k - b * per) for b in range(use.groups) for k in keep if b * per <= k < (b + 1) * per]
            op = Op(axis, local, groups=use.groups)
        else:
            op = Op(axis, keep.tolist(), spatial=use.layout.spatial)
        cut.blobs.setdefault(blob, []).append(op)


def _starts(lengths: list[int]) -> list[int]:
    return [int(x) for x in np.concatenate([[0], np.cumsum(lengths)[:-1]])]


def recipe(graph: Graph, selections: dict[str, Selection]) -> dict[str, LayerCut]:
    """Per layer, what the selections do to it (layers they do not touch are left out)."""
    kept = selection_of(graph, selections)
    cuts: dict[str, LayerCut] = {}
    for use in graph.uses:
        keep = positions(graph, use.layout, kept)
        if keep is None:
            continue
        layer_cut(graph, use, keep, cuts.setdefault(use.layer, LayerCut()))
    # A parameter blob whose shape comes from both ends (a producer that also consumes) gets
    # its output rows cut first: ops apply in the order of the uses (consumer, then producer).
    for cut in cuts.values():
        for ops in cut.blobs.values():
            ops.sort(key=lambda op: op.axis != 0)
    return cuts


def recipe_json(cuts: dict[str, LayerCut]) -> dict[str, Any]:
    return {name: asdict(cut) for name, cut in cuts.items()}


def load_recipe(path: str | Path) -> dict[str, LayerCut]:
    """A recipe saved by `cut` (recipe.json), back as LayerCuts."""
    data = read_json(path, "recipe file")
    try:
        return {
            name: LayerCut(cut["num_output"], cut["group"], cut["slice_point"],
                           {int(i): [Op(**op) for op in ops] for i, ops in cut["blobs"].items()}, cut["add_bias"])
            for name, cut in data.items()
        }  # fmt: skip
    except (KeyError, TypeError) as exc:
        raise BadInput(f"{path}: not a valid recipe file ({exc!r})") from None
