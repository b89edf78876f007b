"""Prove an export: the ONNX model in ONNX Runtime and the net in Caffe, on the same inputs
(seeded random values, or a feed's images). Every blob that has a name in both is computed by
the model from Caffe's own values of the blobs it reads (each layer checked alone, so float32
rounding does not compound over depth) and must equal Caffe's within `tol` relative to the
blob's scale; both must compute something (outputs that are not constant). The model as a user
runs it (ONNX Runtime's graph optimisations on, from the inputs alone) gives the end-to-end
difference of every output, reported: in a deep net with random weights rounding differences
grow layer by layer (MobileNet: 1.7e-7 after its first layer, 4.4e-5 after its 27th).

OpenCV's DNN reads the Caffe files themselves (`cv2.dnn.readNetFromCaffe`); `opencv_difference`
says how far its outputs are from Caffe's on the same inputs, for the benchmarks.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.env import load_caffe
from pytrim.caffeio.netcheck import probe
from pytrim.caffeio.proto import input_net, read_net, write_text
from pytrim.export.build import Exported
from pytrim.feeds.source import Feed, data_source


@dataclass
class ExportCheck:
    """Per compared blob its relative difference; `ok` when all are within `tol`, the outputs
    vary, and nothing else went wrong."""

    tol: float
    differences: dict[str, float] = field(default_factory=dict)  # per blob, from Caffe's inputs
    outputs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    end_to_end: dict[str, float] = field(default_factory=dict)  # per output, from the net's inputs

    @property
    def max_relative_diff(self) -> float:
        return max(self.differences.values(), default=0.0)

    @property
    def worst(self) -> str:
        return max(self.differences, key=self.differences.__getitem__) if self.differences else ""

    @property
    def ok(self) -> bool:
        return not self.problems and self.max_relative_diff <= self.tol

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "tol": self.tol, "max_relative_diff": self.max_relative_diff, "worst": self.worst,
                "outputs": self.outputs, "problems": self.problems, "blobs": self.differences,
                "end_to_end_max_relative_diff": max(self.end_to_end.values(), default=0.0),
                "end_to_end": self.end_to_end}  # fmt: skip

    def failure(self) -> str:
        if self.problems:
            return f"the export is not the net: {self.problems[0]}"
        return (f"the export is not the net: blob {self.worst!r} differs by {self.max_relative_diff:.3g} relative "
                f"to its scale (tolerance {self.tol:g})")  # fmt: skip


def relative(got: np.ndarray, want: np.ndarray) -> float:
    """Largest absolute difference over the largest magnitude of the reference (infinite for
    another shape or a value that is not finite where the reference is)."""
    if got.shape != want.shape or not np.isfinite(got).all():
        return float("inf")
    scale = float(np.abs(want).max()) if want.size else 0.0
    return float(np.abs(got - want).max()) / max(scale, 1e-12) if want.size else 0.0


def caffe_net(net_path: Path, weights: Path, batch: int, tmp: Path, labels: bool = True) -> Any:
    """The net as an Input net of `batch` images with its weights (Caffe's TEST phase)."""
    caffe = load_caffe()
    shapes = probe(net_path).blobs
    path = write_text(input_net(read_net(net_path), shapes, batch, labels), tmp / "caffe.prototxt")
    net = caffe.Net(str(path), caffe.TEST)
    net.copy_from(str(weights))
    return net


def inputs_for(net: Any, names: list[str], seed: int, feed: Feed | None, net_path: Path) -> dict[str, np.ndarray]:
    """The same inputs for both runtimes: a feed's first batch (through Caffe's TEST transform),
    or seeded uniform values in [0, 1); inputs other than the first (labels) are zero."""
    if feed is not None:
        data_source(read_net(net_path), None, feed).feed(net, 0)
        return {name: net.blobs[name].data.copy() for name in names}
    rng = np.random.default_rng(seed)
    return {name: (rng.random(net.blobs[name].data.shape, dtype=np.float32) if i == 0 else
                   np.zeros(net.blobs[name].data.shape, np.float32)) for i, name in enumerate(names)}  # fmt: skip


def session(model: Any, threads: int = 1, optimise: bool = True) -> Any:
    """An ONNX Runtime session of a model (a ModelProto or a path) on the CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if not optimise:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model if isinstance(model, str | Path) else model.SerializeToString()
    return ort.InferenceSession(str(source) if isinstance(source, Path) else source, options,
                                providers=["CPUExecutionProvider"])  # fmt: skip


FED = "@caffe"  # suffix of the inputs that carry Caffe's values of the blobs a layer reads


def fed(exported: Exported, model: Any) -> Any:
    """A copy of the model in which every compared value (each blob's final value) is an output,
    and every node reading one reads instead an input `<value>@caffe`: each layer then computes
    from Caffe's own values of its bottoms."""
    from onnx import ModelProto, TensorProto, helper

    copy = ModelProto()
    copy.CopyFrom(model)
    inputs = {i.name for i in copy.graph.input}
    values = [v for v in dict.fromkeys(exported.blobs.values()) if v not in inputs]
    outputs = {o.name for o in copy.graph.output}
    copy.graph.output.extend(helper.make_empty_tensor_value_info(v) for v in values if v not in outputs)
    chosen = set(values)
    for node in copy.graph.node:
        for i, name in enumerate(node.input):
            if name in chosen:
                node.input[i] = name + FED
    used = {name for node in copy.graph.node for name in node.input}
    copy.graph.input.extend(helper.make_tensor_value_info(v + FED, TensorProto.FLOAT, None) for v in values
                            if v + FED in used)  # fmt: skip
    return copy


def check_export(net_path: Path, weights: Path, model_path: Path, exported: Exported, tol: float = 1e-5,
                 seed: int = 0, feed: Feed | None = None, batch: int = 2) -> ExportCheck:  # fmt: skip
    """The written model (`model_path`) against Caffe on one batch."""
    import onnx

    result = ExportCheck(tol, outputs=list(exported.outputs))
    model = onnx.load(str(model_path))
    with tempfile.TemporaryDirectory(prefix="pytrim-export-") as tmp:
        net = caffe_net(net_path, weights, feed.batch if feed is not None else batch, Path(tmp))
    feeds = inputs_for(net, exported.inputs, seed, feed, net_path)
    for name, array in feeds.items():
        net.blobs[name].data[...] = array
    net.forward()
    if not compare_layers(result, net, exported, model, feeds):
        return result
    plain = dict(zip([o.name for o in model.graph.output], session(model).run(None, feeds), strict=True))
    for value, got in plain.items():
        blob = next(b for b, v in exported.blobs.items() if v == value)
        result.end_to_end[blob] = relative(got, net.blobs[blob].data)
        if not np.isfinite(got).all():
            result.problems.append(f"output {blob!r} is not finite in ONNX Runtime")
        elif float(np.ptp(got)) <= 1e-6 * float(np.abs(got).max() or 1.0):
            result.problems.append(f"output {blob!r} is constant: the net computes nothing there, so the "
                                   "comparison proves nothing")  # fmt: skip
    return result


def compare_layers(result: ExportCheck, net: Any, exported: Exported, model: Any,
                   feeds: dict[str, np.ndarray]) -> bool:  # fmt: skip
    """Each compared blob computed by the model from Caffe's values of the blobs it reads, into
    `result.differences`; False when Caffe's own values are not finite (nothing is proven)."""
    every = fed(exported, model)
    wanted = {i.name for i in every.graph.input}
    given = dict(feeds)
    for blob, value in exported.blobs.items():
        if value + FED in wanted and blob in net.blobs:
            if not np.isfinite(net.blobs[blob].data).all():
                result.problems.append(f"Caffe's blob {blob!r} is not finite: the weights make the net overflow, so "
                                       "the comparison proves nothing")  # fmt: skip
                return False
            given[value + FED] = net.blobs[blob].data.copy()
    names = [o.name for o in every.graph.output]
    values = dict(zip(names, session(every, optimise=False).run(None, given), strict=True))
    for blob, value in exported.blobs.items():
        if blob in net.blobs and value in values and blob not in exported.inputs:
            result.differences[blob] = relative(values[value], net.blobs[blob].data)
    return True


OPENCV_LACKS = ("Bias", "Exp", "Log", "Threshold", "Clip", "Swish")  # OpenCV 4.10 cannot create these from Caffe


def opencv_caveats(net: Any) -> list[str]:
    """What OpenCV 4.10's Caffe reader does not do as Caffe does (measured): the layer types it
    cannot create, InnerProduct's `transpose` and LRN's `k` other than 1, which it ignores."""
    found = [f"{layer.type} layer {layer.name!r}: OpenCV has no such layer" for layer in net.layer
             if layer.type in OPENCV_LACKS]  # fmt: skip
    found += [f"InnerProduct {layer.name!r} has transpose: true, which OpenCV ignores" for layer in net.layer
             if layer.type == "InnerProduct" and layer.inner_product_param.transpose]  # fmt: skip
    found += [f"LRN {layer.name!r} has k = {layer.lrn_param.k:g}, which OpenCV ignores (it uses 1)"
              for layer in net.layer
              if layer.type == "LRN" and layer.lrn_param.k != 1 and layer.lrn_param.norm_region == 0]  # fmt: skip
    return found


def last_writer(net_path: Path, blob: str) -> str:
    """The layer whose output a blob finally is (OpenCV names outputs by layer)."""
    writers = [layer.name for layer in read_net(net_path).layer if blob in layer.top]
    return writers[-1] if writers else blob


def opencv_difference(net_path: Path, weights: Path, exported: Exported, seed: int = 0, batch: int = 2) -> float:
    """How far OpenCV's DNN (reading the Caffe files) is from Caffe on the net's outputs."""
    import cv2

    with tempfile.TemporaryDirectory(prefix="pytrim-opencv-") as tmp:
        net = caffe_net(net_path, weights, batch, Path(tmp), labels=False)
        reader = cv2.dnn.readNetFromCaffe(str(Path(tmp) / "caffe.prototxt"), str(weights))
    feeds = inputs_for(net, [n for n in exported.inputs if n in net.blobs], seed, None, net_path)
    for name, array in feeds.items():
        net.blobs[name].data[...] = array
        reader.setInput(array, name)
    net.forward()
    blobs = [next(b for b, v in exported.blobs.items() if v == value) for value in exported.outputs]
    got = reader.forward([last_writer(net_path, b) for b in blobs])
    return max(relative(np.asarray(g).reshape(net.blobs[b].data.shape), net.blobs[b].data) for b, g in
               zip(blobs, got, strict=True))  # fmt: skip
