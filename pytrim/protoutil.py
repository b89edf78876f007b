"""Caffe's text and binary protobuf files with caffe_pb2 alone (no Net needed).

Caffe aborts the process on a malformed file; these helpers parse in Python first, so bad
input becomes one error naming the file. `layers_in_phase` applies Caffe's include/exclude
rules the way `Net::FilterNet` does, so checks see the layers Caffe will build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import text_format
from google.protobuf.message import DecodeError

from pytrim.caffe_env import caffe_pb2
from pytrim.errors import BadInput
from pytrim.files import write_atomic


def read_text_proto(path: str | Path, message: Any, what: str) -> Any:
    """Parse a text-format file into `message`; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{what} not found: {path}")
    try:
        text_format.Merge(path.read_text(), message)
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not a valid {what}: {exc}") from None
    return message


def read_net(path: str | Path) -> Any:
    """Parse a net prototxt into a NetParameter."""
    return read_text_proto(path, caffe_pb2().NetParameter(), "prototxt")


def read_solver(path: str | Path) -> Any:
    """Parse a solver prototxt into a SolverParameter."""
    return read_text_proto(path, caffe_pb2().SolverParameter(), "solver file")


def write_text(message: Any, path: str | Path) -> Path:
    """Write a message as prototxt, atomically."""
    return write_atomic(path, text_format.MessageToString(message))


def _meets(rule: Any, phase: int, level: int = 0, stages: tuple[str, ...] = ()) -> bool:
    """Caffe's Net::StateMeetsRule."""
    if rule.HasField("phase") and rule.phase != phase:
        return False
    if rule.HasField("min_level") and level < rule.min_level:
        return False
    if rule.HasField("max_level") and level > rule.max_level:
        return False
    return all(s in stages for s in rule.stage) and not any(s in stages for s in rule.not_stage)


def in_phase(layer: Any, phase: str) -> bool:
    """Whether Caffe builds `layer` in `phase` ("TRAIN" or "TEST"), as Net::FilterNet decides."""
    value = caffe_pb2().Phase.Value(phase)
    if layer.include:
        return any(_meets(rule, value) for rule in layer.include)
    return not any(_meets(rule, value) for rule in layer.exclude)


def layers_in_phase(net: Any, phase: str = "TEST") -> list[Any]:
    return [layer for layer in net.layer if in_phase(layer, phase)]


def set_data_sources(
    net: Any, train: str | Path, test: str | Path, batch: int | None = None, max_batch: int | None = None
) -> Any:
    """Point a net's TRAIN and TEST Data layers at other LMDBs; optionally set or cap the batch."""
    for layer in net.layer:
        if layer.type != "Data":
            continue
        layer.data_param.source = str(test if in_phase(layer, "TEST") else train)
        if batch is not None:
            layer.data_param.batch_size = batch
        if max_batch is not None:
            layer.data_param.batch_size = min(layer.data_param.batch_size, max_batch)
    return net


def read_model(path: str | Path) -> Any:
    """Parse a (small) binary caffemodel into a NetParameter; large ones: pytrim.caffemodel."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"caffemodel not found: {path}")
    model = caffe_pb2().NetParameter()
    try:
        model.ParseFromString(path.read_bytes())
    except DecodeError as exc:
        raise BadInput(f"{path}: not a valid caffemodel: {exc}") from None
    return model


def write_model(model: Any, path: str | Path) -> Path:
    """Write a NetParameter as a binary caffemodel, atomically."""
    return write_atomic(path, model.SerializeToString())


def with_test_data(net_path: str | Path, source: str | Path, out: str | Path) -> Path:
    """A copy of a train_val whose TEST Data layers read `source` (another LMDB: a sample of
    training images, the validation split)."""
    net = read_net(net_path)
    for layer in net.layer:
        if layer.type == "Data" and in_phase(layer, "TEST"):
            layer.data_param.source = str(source)
    return write_text(net, out)
