"""Cut chosen channels out of a net: a recipe (the cut as data), then new prototxts and a new
caffemodel that follow it.

A recipe says, per layer, how its settings change (num_output; a depthwise convolution's
group; a Slice's points) and, per parameter blob, which indices it keeps along which axis.
It is computed from the channel-dependency graph (pytrim.graph) and the selections (which
channels of each group stay), checked in full before anything is written, saved beside the
result (recipe.json) and applied by `apply_ops`. Files appear together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffemodel import Caffemodel
from pytrim.choose import Selection
from pytrim.errors import BadInput, UnsupportedTopology
from pytrim.files import together, write_json
from pytrim.graph import Graph, Group, Layout, Use, build_graph
from pytrim.netcheck import NetShapes, check_weights, probe
from pytrim.protoutil import read_net, write_text


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


@dataclass
class CutResult:
    """What a cut wrote and how the net changed."""

    nets: list[Path]
    weights: Path
    widths_before: dict[str, int]
    widths_after: dict[str, int]
    params_before: int
    params_after: int
    recipe: dict[str, LayerCut]
    inexact: dict[str, list[str]] = field(default_factory=dict)


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


# --- from selections to a recipe ------------------------------------------------------------


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


def group_of(graph: Graph, layer: str) -> Group:
    """The group a layer's output channels belong to, refused with its reasons if fixed."""
    for use in graph.uses:
        if use.layer == layer and use.kind in ("producer", "member", "depthwise"):
            group = graph.group(use.layout.segments[0].group)
            if group.fixed:
                raise UnsupportedTopology(f"layer {layer!r} cannot be trimmed: {'; '.join(group.fixed)}")
            return group
    raise UnsupportedTopology(f"the net has no layer {layer!r} with channels to trim")


def check_selection(group: Group, name: str, selection: Selection) -> None:
    keep = np.asarray(selection.keep)
    if selection.width != group.width:
        raise BadInput(f"selection for {name!r} is for {selection.width} channels, its group has {group.width}")
    if keep.size == 0:
        raise BadInput(f"selection would empty layer {name!r}")
    if keep.min() < 0 or keep.max() >= group.width or np.unique(keep).size != keep.size:
        raise BadInput(f"selection for {name!r} has invalid or repeated indices")
    if group.blocks > 1:
        counts = np.bincount(keep // (group.width // group.blocks), minlength=group.blocks)
        if len(set(counts.tolist())) != 1 or counts.min() == 0:
            raise BadInput(
                f"selection for {name!r} keeps {counts.tolist()} channels of its {group.blocks} blocks: a grouped "
                "convolution needs the same number from every block (and at least one)"
            )


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
            per = graph.group(use.layout.segments[0].group).width // use.groups
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


# --- writing ---------------------------------------------------------------------------------


def edit_net(net: Any, cuts: dict[str, LayerCut]) -> Any:
    """The prototxt with the recipe's settings (every phase's copy of a layer is changed)."""
    for layer in net.layer:
        cut = cuts.get(layer.name)
        if cut is None:
            continue
        spec = layer.inner_product_param if layer.type == "InnerProduct" else layer.convolution_param
        if cut.num_output is not None:
            spec.num_output = cut.num_output
        if cut.group is not None:
            spec.group = cut.group
        if cut.slice_point is not None:
            del layer.slice_param.slice_point[:]
            layer.slice_param.slice_point.extend(cut.slice_point)
        if cut.add_bias:
            spec.bias_term = True
    return net


def new_blobs(
    model: Caffemodel, shapes: NetShapes, cuts: dict[str, LayerCut], biases: dict[str, np.ndarray]
) -> dict[str, list[np.ndarray]]:
    """The cut layers' new parameter arrays (each blob first given the net's own shape: old
    caffemodels store 4-d legacy shapes), with folded means added to the biases."""
    result = {}
    for name, cut in cuts.items():
        if name not in model.layers:
            continue
        arrays = [a.reshape(s) for a, s in zip(model.arrays(name), shapes.params[name], strict=True)]
        if name in biases:
            added = biases[name].astype(np.float32)
            if len(arrays) > 1:
                arrays[1] = arrays[1] + added
            else:  # a bias for a consumer that had none: cut like its weights' output rows
                arrays.append(added)
                cut.add_bias = True
                cut.blobs[1] = [Op(0, op.keep) for op in cut.blobs.get(0, []) if op.axis == 0 and op.groups == 1]
        result[name] = apply_ops(arrays, cut)
    return result


def weights_reader(model: Caffemodel, shapes: NetShapes) -> Callable[[str], np.ndarray]:
    return lambda name: model.arrays(name)[0].reshape(shapes.params[name][0])


def folded_biases(
    graph: Graph, kept: dict[int, np.ndarray], model: Caffemodel, shapes: NetShapes, fold: dict | None
) -> dict[str, np.ndarray]:
    """What --fold-mean adds to each consumer's bias (pytrim.fold); nothing without `fold`."""
    if not fold:
        return {}
    from pytrim.fold import fold_biases

    return fold_biases(graph, kept, weights_reader(model, shapes), fold)


def train_only_readers(net: Any, graph: Graph, selections: dict[str, Selection], where: str) -> None:
    """A layer that exists only in the TRAIN phase must not read channels being cut: the
    graph (built for the TEST phase) cannot say what the cut does to it."""
    from pytrim.protoutil import layers_in_phase

    test = {(layer.name, layer.type) for layer in layers_in_phase(net, "TEST")}
    kept = selection_of(graph, selections)
    for layer in layers_in_phase(net, "TRAIN"):
        if (layer.name, layer.type) in test or layer.type in ("Data", "ImageData", "HDF5Data"):
            continue
        for bottom in layer.bottom:
            if bottom in graph.layouts and positions(graph, graph.layouts[bottom], kept) is not None:
                raise UnsupportedTopology(f"{where}: TRAIN-only layer {layer.name!r} reads channels being cut")


def same_cuts(a: dict[str, LayerCut], b: dict[str, LayerCut], where: str) -> None:
    """Two prototxts of one net (train_val, deploy) must cut the shared layers alike."""
    for name in set(a) & set(b):
        if a[name].blobs != b[name].blobs or a[name].num_output != b[name].num_output:
            raise UnsupportedTopology(f"{where}: layer {name!r} would be cut differently than in the first prototxt")


def cut(
    nets: list[str | Path],
    weights: str | Path,
    selections: dict[str, Selection],
    out_nets: list[str | Path],
    out_weights: str | Path,
    allow_inexact: bool = False,
    fold: dict[str, np.ndarray] | None = None,
) -> CutResult:
    """Remove the channels `selections` leave out from the prototxts `nets` (train_val first)
    and the caffemodel `weights`; write `out_nets`, `out_weights` and recipe.json beside them.
    With `fold` (blob -> mean, pytrim.fold), removed channels' means go into the biases."""
    if len(nets) != len(out_nets):
        raise BadInput("one output path per prototxt is needed")
    params = [read_net(path) for path in nets]
    shapes = [probe(path) for path in nets]
    graphs = [build_graph(p, s.blobs, allow_inexact=allow_inexact) for p, s in zip(params, shapes, strict=True)]
    cuts = [recipe(graph, selections) for graph in graphs]
    for path, net, graph in zip(nets, params, graphs, strict=True):
        train_only_readers(net, graph, selections, str(path))
    for path, other in zip(nets[1:], cuts[1:], strict=True):
        same_cuts(cuts[0], other, str(path))
    with Caffemodel(weights) as model:
        if model.v1:
            raise BadInput(f"{weights} is in the old V1 format: upgrade it first (tools accept it and upgrade it)")
        for path, shape in zip(nets, shapes, strict=True):
            check_weights(shape, model, str(path))
        biases = folded_biases(graphs[0], selection_of(graphs[0], selections), model, shapes[0], fold)
        blobs = new_blobs(model, shapes[0], cuts[0], biases)
        for other in cuts[1:]:
            for name, cut_ in other.items():
                cut_.add_bias = cuts[0][name].add_bias if name in cuts[0] else False
        params_before = model.params()
        replaced = sum(b.data.size for name in blobs for b in model.layers[name].blobs)
        params_after = params_before - replaced + sum(a.size for arrays in blobs.values() for a in arrays)
        recipe_file = Path(out_weights).with_name("recipe.json")
        with together([*out_nets, out_weights]) as partials:
            for net, cuts_, partial in zip(params, cuts, partials, strict=False):
                write_text(edit_net(net, cuts_), partial)
            model.write(partials[-1], blobs)
        write_json(recipe_file, recipe_json(cuts[0]))
    return summarize(graphs[0], selections, cuts[0], [Path(p) for p in out_nets], Path(out_weights),
                     (params_before, params_after))  # fmt: skip


def summarize(
    graph: Graph,
    selections: dict[str, Selection],
    cuts: dict[str, LayerCut],
    nets: list[Path],
    weights: Path,
    params: tuple[int, int],
) -> CutResult:
    groups = {name: group_of(graph, name) for name in selections}
    return CutResult(
        nets=nets,
        weights=weights,
        widths_before={name: g.width for name, g in groups.items()},
        widths_after={name: len(selections[name].keep) for name in selections},
        params_before=params[0],
        params_after=params[1],
        recipe=cuts,
        inexact={name: g.inexact for name, g in groups.items() if g.inexact},
    )


def count_params(weights: str | Path) -> int:
    """Number of learned parameters stored in a caffemodel."""
    with Caffemodel(weights) as model:
        return model.params()


def trimmable(graph: Graph) -> dict[str, Group]:
    """Trimmable groups by name (their first producer)."""
    return {group.name: group for group in graph.groups() if group.trimmable}


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
