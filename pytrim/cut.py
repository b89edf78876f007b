"""Cut the chosen neurons out of a net: new prototxts and a new caffemodel (caffe_pb2 + numpy).

For each trimmed layer the rows of its weights and its bias entries of removed neurons go,
and every consumer loses the matching inputs: input channels of a Convolution; for an
InnerProduct the weight is seen as [out, C, H*W] (Caffe flattens channel-major, index
c*H*W + h*W + w), sliced on C and flattened back; for fc->fc H*W = 1. H*W is the consumer's
input size divided by C, checked to divide exactly. Only `num_output` of trimmed layers
changes in the prototxts. Everything is checked before anything is written, and files are
written under temporary names and renamed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffemodel import Caffemodel
from pytrim.choose import Selection
from pytrim.errors import BadInput, ModelMismatch, UnsupportedTopology
from pytrim.files import together
from pytrim.graph import trim_site
from pytrim.netcheck import check_weights, probe
from pytrim.protoutil import read_net, write_text


@dataclass
class CutResult:
    """What a cut wrote and how the net changed."""

    nets: list[Path]
    weights: Path
    widths_before: dict[str, int]
    widths_after: dict[str, int]
    params_before: int
    params_after: int


def weight_matrix(array: np.ndarray, layer_type: str) -> np.ndarray:
    """Weights as [out, in, ...]: conv [out, in, kh, kw]; InnerProduct [out, in] (legacy 4-d too)."""
    if layer_type == "InnerProduct" and array.ndim != 2:
        array = array.reshape(array.shape[-2], array.shape[-1])
    return array


def check_static(nets: list[str | Path], model: Caffemodel) -> None:
    """Every prototxt builds in Caffe and the caffemodel fits it, blob by blob (checked
    before any array is computed: Caffe would abort on a mismatch later)."""
    for path in nets:
        check_weights(probe(path), model, str(path))


def count_params(weights: str | Path) -> int:
    """Number of learned parameters stored in a caffemodel."""
    with Caffemodel(weights) as model:
        return model.params()


def cut(
    nets: list[str | Path],
    weights: str | Path,
    selections: dict[str, Selection],
    out_nets: list[str | Path],
    out_weights: str | Path,
) -> CutResult:
    """Remove the neurons of `selections` from the prototxts `nets` and the caffemodel `weights`.

    The first prototxt (train_val) gives the topology; every prototxt is checked too.
    """
    if len(nets) != len(out_nets):
        raise BadInput("one output path per prototxt is needed")
    params = [read_net(path) for path in nets]
    with Caffemodel(weights) as model:
        if model.v1:
            raise BadInput(f"{weights} is in the old V1 format: upgrade it first (tools accept it and upgrade it)")
        return _cut(nets, params, model, selections, [Path(p) for p in out_nets], Path(out_weights))


def _cut(
    nets: list[str | Path],
    params: list[Any],
    model: Caffemodel,
    selections: dict[str, Selection],
    out_nets: list[Path],
    out_weights: Path,
) -> CutResult:
    check_static(nets, model)

    # Topology: producers, their consumers; refuse what cannot be followed, in every prototxt.
    sites = {}
    for name, selection in selections.items():
        for path, net in zip(nets, params, strict=True):
            try:
                site = trim_site(net, name)
            except UnsupportedTopology as exc:
                raise UnsupportedTopology(f"{path}: {exc}") from None
            if net is params[0]:
                sites[name] = site
        site = sites[name]
        if selection.width != site.width:
            raise BadInput(f"selection for {name!r} is for {selection.width} neurons, the layer has {site.width}")
        keep = selection.keep
        if keep.size == 0:
            raise BadInput(f"selection would empty layer {name!r}")
        if keep.min() < 0 or keep.max() >= site.width or np.unique(keep).size != keep.size:
            raise BadInput(f"selection for {name!r} has invalid or repeated indices")
    consumer_of = {c.layer: name for name, site in sites.items() for c in site.consumers}
    types = {layer.name: layer.type for layer in params[0].layer}

    # New weights, computed in full before anything is written.
    new_blobs: dict[str, list[np.ndarray]] = {}
    for name in sorted(set(sites) | set(consumer_of), key=list(types).index):
        arrays = model.arrays(name)
        w = weight_matrix(arrays[0], types[name])
        rest = [b.reshape(-1) for b in arrays[1:]]  # biases, 1-d (legacy files store them 4-d)
        if name in sites:  # output rows
            keep = selections[name].keep
            w = w[keep]
            rest = [b[keep] if b.size == sites[name].width else b for b in rest]
        if name in consumer_of:  # input columns
            producer = consumer_of[name]
            keep_in, width_in = selections[producer].keep, sites[producer].width
            if types[name] == "Convolution":
                if w.shape[1] != width_in:
                    raise ModelMismatch(f"{name}: {w.shape[1]} input channels, but {producer!r} has {width_in}")
                w = w[:, keep_in]
            else:
                inputs = w.shape[1]
                if inputs % width_in:
                    raise ModelMismatch(
                        f"{name}: {inputs} inputs is not a multiple of {producer!r}'s {width_in} channels"
                    )
                spatial = inputs // width_in
                w = w.reshape(w.shape[0], width_in, spatial)[:, keep_in, :].reshape(w.shape[0], -1)
        new_blobs[name] = [w, *rest]

    widths_before = {name: site.width for name, site in sites.items()}
    params_before = model.params()
    replaced = sum(blob.data.size for name in new_blobs for blob in model.layers[name].blobs)
    params_after = params_before - replaced + sum(a.size for arrays in new_blobs.values() for a in arrays)
    for net in params:
        for layer in net.layer:
            if layer.name in sites:
                field = layer.convolution_param if layer.type == "Convolution" else layer.inner_product_param
                field.num_output = len(selections[layer.name].keep)
    with together([*out_nets, out_weights]) as partials:
        for net, partial in zip(params, partials[:-1], strict=True):
            write_text(net, partial)
        model.write(partials[-1], new_blobs)
    return CutResult(
        nets=out_nets,
        weights=Path(out_weights),
        widths_before=widths_before,
        widths_after={name: len(selections[name].keep) for name in sites},
        params_before=params_before,
        params_after=params_after,
    )
