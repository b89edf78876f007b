"""Cut chosen channels out of a net: new prototxts and a new caffemodel that follow the recipe
(pytrim.surgery.recipe) the selections give. Shapes are checked before anything is written;
the caffemodel is rewritten blob by blob (pytrim.caffeio.caffemodel); files appear together
or not at all, with recipe.json beside the weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.caffemodel import Caffemodel, count_params
from pytrim.caffeio.netcheck import NetShapes, check_weights, probe
from pytrim.caffeio.proto import layers_in_phase, read_net, write_text
from pytrim.core.errors import BadInput, UnsupportedTopology
from pytrim.core.files import together, write_json
from pytrim.graph.build import build_graph
from pytrim.graph.model import Graph
from pytrim.graph.queries import group_of, positions
from pytrim.surgery.choose import Selection
from pytrim.surgery.fold import fold_biases
from pytrim.surgery.recipe import LayerCut, Op, apply_ops, recipe, recipe_json, selection_of


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
    """What --fold-mean adds to each consumer's bias (pytrim.surgery.fold); nothing without `fold`."""
    if not fold:
        return {}

    return fold_biases(graph, kept, weights_reader(model, shapes), fold)


def train_only_readers(net: Any, graph: Graph, selections: dict[str, Selection], where: str) -> None:
    """A layer that exists only in the TRAIN phase must not read channels being cut: the
    graph (built for the TEST phase) cannot say what the cut does to it."""

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
    With `fold` (blob -> mean, pytrim.surgery.fold), removed channels' means go into the biases."""
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
        recipe_file = Path(out_weights).with_name("recipe.json")
        with together([*out_nets, out_weights]) as partials:
            for net, cuts_, partial in zip(params, cuts, partials, strict=False):
                write_text(edit_net(net, cuts_), partial)
            model.write(partials[-1], blobs)
            params_after = count_params(partials[-1])  # shared blobs once (the one counter)
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
