"""Read and write Caffe's prototxt and caffemodel files with caffe_pb2 alone (no Net needed).

Caffe aborts the process on a malformed file; these helpers parse in Python first, so bad
input becomes a Python exception with the file's name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from google.protobuf.message import DecodeError

from pytrim.caffe_env import caffe_pb2


def read_text_proto(path: str | Path, message: Any, what: str) -> Any:
    """Parse a text-format file into `message`; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        text_format.Merge(path.read_text(), message)
    except text_format.ParseError as exc:
        raise ValueError(f"{path}: not a valid {what}: {exc}") from exc
    return message


def read_net(path: str | Path) -> Any:
    """Parse a net prototxt into a NetParameter."""
    return read_text_proto(path, caffe_pb2().NetParameter(), "prototxt")


def set_data_sources(
    net: Any, train: str | Path, test: str | Path, batch: int | None = None, max_batch: int | None = None
) -> Any:
    """Point a net's TRAIN and TEST Data layers at other LMDBs; optionally set or cap the batch."""
    for layer in net.layer:
        if layer.type != "Data":
            continue
        is_test = any(rule.phase == caffe_pb2().TEST for rule in layer.include)
        layer.data_param.source = str(test if is_test else train)
        if batch is not None:
            layer.data_param.batch_size = batch
        if max_batch is not None:
            layer.data_param.batch_size = min(layer.data_param.batch_size, max_batch)
    return net


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write a file under a temporary name, then rename it: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)
    return path


def write_text(message: Any, path: str | Path) -> Path:
    """Write a message as prototxt, atomically."""
    return write_atomic(path, text_format.MessageToString(message).encode())


def read_model(path: str | Path) -> Any:
    """Parse a binary caffemodel into a NetParameter."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caffemodel not found: {path}")
    model = caffe_pb2().NetParameter()
    try:
        model.ParseFromString(path.read_bytes())
    except DecodeError as exc:
        raise ValueError(f"{path}: not a valid caffemodel: {exc}") from exc
    return model


def write_model(model: Any, path: str | Path) -> Path:
    """Write a NetParameter as a binary caffemodel, atomically."""
    return write_atomic(path, model.SerializeToString())
