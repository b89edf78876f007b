"""A Caffe net as an ONNX model: the TEST phase as Caffe builds it (its blob shapes from the
probe), each layer through its translation (pytrim.export.translations), checked with onnx's
checker and shape inference, opset 17, the batch dimension dynamic.

A train_val's TEST data layers become the model's inputs (the data blob as Caffe computes it,
after the Data layer's transform) and its losses and Accuracy are left out (listed in
`left_out`); in a deploy net a loss, or any layer without an ONNX meaning (a Python layer, an
unknown type), is refused by name. The model's outputs are the blobs no exported layer reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.caffemodel import Caffemodel
from pytrim.caffeio.netcheck import NetShapes, check_model
from pytrim.caffeio.proto import LABELLED, layers_in_phase, read_net
from pytrim.export.graph import Graph, refuse
from pytrim.export.translations import TRANSLATIONS

OPSET = 17
IR_VERSION = 8  # the IR of opset 17: runtimes of that generation load it
DATA = ("Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "DummyData", "Input")
BATCH = "N"


@dataclass
class Exported:
    """An ONNX model made from a Caffe net, and how the two correspond."""

    model: Any
    blobs: dict[str, str]  # Caffe blob -> the ONNX value holding its final value
    inputs: list[str]
    outputs: list[str]
    left_out: list[str] = field(default_factory=list)  # "name (type)" of the losses and Accuracy left out


def weights_reader(model: Caffemodel, shapes: NetShapes, net: Any) -> Callable[[str], list[np.ndarray]]:
    """A layer's parameter blobs in the net's shapes; a layer whose blobs are shared (`param
    { name: ... }`) and not stored under its own name reads the first layer that stores them."""
    owners: dict[tuple[str, ...], str] = {}
    for layer in net.layer:
        names = tuple(p.name for p in layer.param)
        if any(names) and layer.name in model.layers:
            owners.setdefault(names, layer.name)
    named = {layer.name: tuple(p.name for p in layer.param) for layer in net.layer}

    def read(name: str) -> list[np.ndarray]:
        stored = name if name in model.layers else owners.get(named.get(name, ()), name)
        arrays = model.arrays(stored)
        return [np.asarray(a, dtype=np.float32).reshape(s) for a, s in zip(arrays, shapes.params[name], strict=True)]

    return read


def _is_train_val(layers: list[Any]) -> bool:
    return any(layer.type in DATA and layer.type != "Input" for layer in layers)


def _exported_layers(layers: list[Any]) -> tuple[list[Any], list[str]]:
    """The layers to translate and the losses/Accuracy of a train_val left out."""
    train_val = _is_train_val(layers)
    kept, left = [], []
    for layer in layers:
        if layer.type in DATA:
            continue
        if layer.type in LABELLED:
            if not train_val:
                raise refuse(layer, "is a loss or an accuracy in a deploy net: it has no ONNX meaning without labels")
            left.append(f"{layer.name} ({layer.type})")
            continue
        kept.append(layer)
    return kept, left


def _inputs(net: Any, layers: list[Any], kept: list[Any]) -> list[str]:
    """The blobs the model takes: the old `input:` fields and the data layers' tops that an
    exported layer reads."""
    read = {bottom for layer in kept for bottom in layer.bottom}
    found = [name for name in net.input]
    found += [
        top for layer in layers if layer.type in DATA for top in layer.top if top in read or layer.type == "Input"
    ]
    return list(dict.fromkeys(found))


def _outputs(g: Graph, kept: list[Any]) -> list[str]:
    """The final values no exported layer reads, in the order they were written."""
    written = list(dict.fromkeys(top for layer in kept for top in layer.top))
    return list(dict.fromkeys(g.value(top) for top in written if not _read_later(kept, top)))


def _read_later(kept: list[Any], blob: str) -> bool:
    """Whether an exported layer reads `blob` after the last layer that writes it."""
    last = max(i for i, layer in enumerate(kept) if blob in layer.top)
    return any(blob in layer.bottom for layer in kept[last + 1 :])


def _value_info(name: str, shape: list[int], batch: int) -> Any:
    from onnx import TensorProto, helper

    dims: list[Any] = [BATCH if i == 0 and d == batch else d for i, d in enumerate(shape)]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def translate(net_path: Path, weights: Path) -> Exported:
    """The ONNX model of `net_path` (TEST phase) with the weights of `weights`."""
    from onnx import checker, helper, numpy_helper, shape_inference

    net, shapes = read_net(net_path), check_model(net_path, weights)
    layers = layers_in_phase(net, "TEST")
    kept, left_out = _exported_layers(layers)
    inputs = _inputs(net, layers, kept)
    with Caffemodel(weights) as model:
        g = Graph(shapes.blobs, weights_reader(model, shapes, net))
        for name in inputs:
            g.top(name, "input")
        for layer in kept:
            translation = TRANSLATIONS.get(layer.type)
            if translation is None:
                why = "is a Python layer: its computation is Python code" if layer.type == "Python" else (
                    "has no translation to ONNX")  # fmt: skip
                raise refuse(layer, why)
            for bottom in layer.bottom:  # a BatchNorm output read by another layer cannot take a later Scale
                if layer.type != "Scale" or layer.bottom[0] != layer.top[0]:
                    g.folded.pop(g.value(bottom), None)
            translation(g, layer)
        batch = shapes.blobs[inputs[0]][0] if inputs else 1
        outputs = _outputs(g, kept)
        blob_of = {value: blob for blob, value in g.current.items()}
        graph = helper.make_graph(
            g.nodes, net.name or Path(net_path).stem,
            [_value_info(n, shapes.blobs[n], batch) for n in inputs],
            [_value_info(v, shapes.blobs[blob_of[v]], batch) for v in outputs],
            [numpy_helper.from_array(array, name) for name, array in g.initializers.items()],
        )  # fmt: skip
    made = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pytrim")
    made.ir_version = IR_VERSION
    checker.check_model(made, full_check=True)
    made = shape_inference.infer_shapes(made, strict_mode=True)
    return Exported(made, dict(g.current), inputs, outputs, left_out)
