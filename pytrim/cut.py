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

from pytrim.choose import Selection
from pytrim.collect import ModelMismatch, blob_shape
from pytrim.graph import TRIMMABLE, UnsupportedTopology, num_output, trim_site
from pytrim.protoutil import read_model, read_net, write_model, write_text


@dataclass
class CutResult:
    """What a cut wrote and how the net changed."""

    nets: list[Path]
    weights: Path
    widths_before: dict[str, int]
    widths_after: dict[str, int]
    params_before: int
    params_after: int


def blob_array(blob: Any) -> np.ndarray:
    return np.asarray(blob.data, dtype=np.float32).reshape(blob_shape(blob))


def set_blob(blob: Any, array: np.ndarray) -> None:
    """Replace a BlobProto's data and shape (the legacy 4-d shape fields are cleared)."""
    for name in ("num", "channels", "height", "width"):
        blob.ClearField(name)
    blob.ClearField("data")
    blob.shape.ClearField("dim")
    blob.shape.dim.extend(int(d) for d in array.shape)
    blob.data.extend(np.ascontiguousarray(array, dtype=np.float32).ravel().tolist())


def model_layers(model: Any) -> dict[str, Any]:
    """Layers of a caffemodel that hold weights, by name."""
    if len(model.layers) and not len(model.layer):
        raise ValueError("the caffemodel is in the old V1 format: upgrade it with upgrade_net_proto_binary first")
    return {layer.name: layer for layer in model.layer if len(layer.blobs)}


def weight_matrix(blob: Any, layer_type: str) -> np.ndarray:
    """Weights as [out, in, ...]: conv [out, in, kh, kw]; InnerProduct [out, in] (legacy 4-d too)."""
    array = blob_array(blob)
    if layer_type == "InnerProduct" and array.ndim != 2:
        array = array.reshape(array.shape[-2], array.shape[-1])
    return array


def check_static(net: Any, layers: dict[str, Any], net_name: str, model_name: str) -> None:
    """Every Conv/IP of the prototxt has weights whose output size is its num_output."""
    problems = []
    for layer in net.layer:
        if layer.type not in TRIMMABLE:
            continue
        if layer.name not in layers:
            problems.append(f"{layer.name}: in {net_name} but has no weights in {model_name}")
            continue
        weights = weight_matrix(layers[layer.name].blobs[0], layer.type)
        if weights.shape[0] != num_output(layer):
            problems.append(
                f"{layer.name}: num_output {num_output(layer)} in {net_name}, weights {weights.shape} in {model_name}"
            )
    if problems:
        raise ModelMismatch(f"{model_name} does not match {net_name}:\n  " + "\n  ".join(dict.fromkeys(problems)))


def count_params(model: Any) -> int:
    return sum(int(np.prod(blob_shape(b))) for layer in model_layers(model).values() for b in layer.blobs)


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
        raise ValueError("one output path per prototxt is needed")
    params = [read_net(path) for path in nets]
    model = read_model(weights)
    layers = model_layers(model)
    check_static(params[0], layers, str(nets[0]), str(weights))

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
            raise ValueError(f"selection for {name!r} is for {selection.width} neurons, the layer has {site.width}")
        keep = selection.keep
        if keep.size == 0:
            raise ValueError(f"selection would empty layer {name!r}")
        if keep.min() < 0 or keep.max() >= site.width or np.unique(keep).size != keep.size:
            raise ValueError(f"selection for {name!r} has invalid or repeated indices")
    consumer_of = {c.layer: name for name, site in sites.items() for c in site.consumers}
    types = {layer.name: layer.type for layer in params[0].layer}

    # New weights, computed in full before anything is written.
    new_blobs: dict[str, list[np.ndarray]] = {}
    for name in sorted(set(sites) | set(consumer_of), key=list(types).index):
        layer = layers[name]
        w = weight_matrix(layer.blobs[0], types[name])
        rest = [blob_array(b) for b in layer.blobs[1:]]
        if name in sites:  # output rows
            keep = selections[name].keep
            w = w[keep]
            rest = [b.reshape(-1)[keep] if b.size == sites[name].width else b for b in rest]
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
    params_before = count_params(model)
    for name, arrays in new_blobs.items():
        for blob, array in zip(layers[name].blobs, arrays, strict=True):
            set_blob(blob, array)
    for net in params:
        for layer in net.layer:
            if layer.name in sites:
                field = layer.convolution_param if layer.type == "Convolution" else layer.inner_product_param
                field.num_output = len(selections[layer.name].keep)

    out_nets = [Path(p) for p in out_nets]
    for net, path in zip(params, out_nets, strict=True):
        write_text(net, path)
    write_model(model, out_weights)
    return CutResult(
        nets=out_nets,
        weights=Path(out_weights),
        widths_before=widths_before,
        widths_after={name: len(selections[name].keep) for name in sites},
        params_before=params_before,
        params_after=count_params(model),
    )
