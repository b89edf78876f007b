"""Read and write caffemodels blob by blob, without parsing them whole.

A caffemodel is a serialized NetParameter; VGG-16's is 528 MB. Parsing it with protobuf
holds the file's bytes, the parsed message and, on writing, a serialized copy: about three
times its size. Here the protobuf wire format is walked directly over a memory map: each
weight blob becomes a numpy view of the file (no copy), and a new caffemodel is written
layer by layer, copying the bytes of untouched layers verbatim and encoding only the
changed ones. Only the fields pytrim needs are decoded (layer name and type, blob shapes
and data); everything else is carried over byte for byte.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from pytrim.core.errors import BadInput
from pytrim.core.files import naming, together

# Field numbers (caffe.proto).
NET_LAYER, NET_LAYERS_V1 = 100, 2
LAYER_NAME, LAYER_TYPE, LAYER_BLOBS = 1, 2, 7
LAYER_PARAM, PARAM_NAME = 6, 1  # LayerParameter.param (ParamSpec), ParamSpec.name: a shared blob's name
V1_NAME, V1_TYPE, V1_BLOBS = 4, 5, 6
BLOB_LEGACY = {1: 0, 2: 1, 3: 2, 4: 3}  # num, channels, height, width
BLOB_DATA, BLOB_SHAPE, BLOB_DOUBLE_DATA = 5, 7, 8
SHAPE_DIM = 1


class CaffemodelError(BadInput):
    """The file is not a caffemodel this reader understands."""


def read_varint(buf: memoryview | bytes, pos: int) -> tuple[int, int]:
    """One base-128 varint at `pos`: at most 10 bytes (64 bits), so any input is read in
    linear time (an unbounded loop over 0xFF bytes would build ever larger integers)."""
    result = shift = 0
    for _ in range(10):
        if pos >= len(buf):
            raise CaffemodelError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    raise CaffemodelError(f"varint longer than 10 bytes at offset {pos - 10}")


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


@dataclass
class Field:
    """One field of a message: number, wire type, the byte range of the whole field (tag
    included) and of its value (length-delimited) or the value itself (varint)."""

    number: int
    wire_type: int
    start: int
    end: int
    value_start: int
    value: int = 0


def fields(buf: memoryview, start: int, end: int) -> Iterator[Field]:
    """The fields of the message in buf[start:end]."""
    pos = start
    while pos < end:
        key, value_start = read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        value = 0
        if wire_type == 0:
            value, after = read_varint(buf, value_start)
        elif wire_type == 2:
            value, data_start = read_varint(buf, value_start)
            value_start, after = data_start, data_start + value
        elif wire_type in (1, 5):
            after = value_start + (8 if wire_type == 1 else 4)
        else:
            raise CaffemodelError(f"unsupported wire type {wire_type}")
        if after > end:
            raise CaffemodelError("truncated field")
        yield Field(number, wire_type, pos, after, value_start, value)
        pos = after


@dataclass
class Blob:
    """A weight blob: its shape and its values (a read-only view of the file when float32)."""

    shape: tuple[int, ...]
    data: np.ndarray

    def array(self) -> np.ndarray:
        return self.data.reshape(self.shape)


@dataclass
class Layer:
    """A layer of the caffemodel that holds weights."""

    name: str
    type: str
    start: int  # byte range of the whole field (tag included) in the file
    end: int
    value_start: int
    blobs: list[Blob] = field(default_factory=list)
    shared: list[str] = field(default_factory=list)  # per blob, the name it is shared under ("": its own)


def _param_name(buf: memoryview, spec: Field) -> str:
    """The name of a ParamSpec: blobs of several layers with one name are one blob in Caffe."""
    for f in fields(buf, spec.value_start, spec.end):
        if f.number == PARAM_NAME and f.wire_type == 2:
            return bytes(buf[f.value_start : f.end]).decode()
    return ""


def _dims(buf: memoryview, shape_field: Field) -> list[int]:
    """The dims of a BlobShape message (packed or not)."""
    dims = []
    for d in fields(buf, shape_field.value_start, shape_field.end):
        if d.number != SHAPE_DIM:
            continue
        if d.wire_type != 2:
            dims.append(d.value)
            continue
        pos = d.value_start  # packed
        while pos < d.end:
            value, pos = read_varint(buf, pos)
            dims.append(value)
    return dims


def _values(buf: memoryview, f: Field) -> np.ndarray:
    """A blob's float (or double) data as float32: a view of the file for float data."""
    if f.wire_type != 2:
        raise CaffemodelError("unpacked blob data is not supported")
    if f.number == BLOB_DATA:
        return np.frombuffer(buf, dtype="<f4", count=f.value // 4, offset=f.value_start)
    return np.frombuffer(buf, dtype="<f8", count=f.value // 8, offset=f.value_start).astype(np.float32)


def _blob(buf: memoryview, start: int, end: int) -> Blob:
    legacy: dict[int, int] = {}
    shape: list[int] | None = None
    data = np.zeros(0, dtype=np.float32)
    for f in fields(buf, start, end):
        if f.number in BLOB_LEGACY and f.wire_type == 0:
            legacy[BLOB_LEGACY[f.number]] = f.value
        elif f.number == BLOB_SHAPE and f.wire_type == 2:
            shape = _dims(buf, f)
        elif f.number in (BLOB_DATA, BLOB_DOUBLE_DATA):
            data = _values(buf, f)
    if shape is None:
        shape = [legacy.get(i, 0) for i in range(4)] if legacy else []
    if int(np.prod(shape, dtype=np.int64)) != data.size:
        raise CaffemodelError(f"blob of shape {tuple(shape)} holds {data.size} values")
    return Blob(tuple(int(s) for s in shape), data)


class Caffemodel:
    """A caffemodel opened for reading (memory-mapped); `layers` are those with weights."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise BadInput(f"caffemodel not found: {self.path}")
        if self.path.stat().st_size == 0:
            raise CaffemodelError(f"{self.path}: empty file, not a caffemodel")
        self._file = self.path.open("rb")
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        self.buf = memoryview(self._map)
        self.v1 = False
        self.layers: dict[str, Layer] = {}
        self.copies: dict[str, int] = {}
        try:
            for f in fields(self.buf, 0, len(self.buf)):
                if f.number == NET_LAYER and f.wire_type == 2:
                    self._add(f, LAYER_NAME, LAYER_TYPE, LAYER_BLOBS)
                elif f.number == NET_LAYERS_V1 and f.wire_type == 2:
                    self.v1 = True
                    self._add(f, V1_NAME, V1_TYPE, V1_BLOBS)
        except (CaffemodelError, IndexError, UnicodeDecodeError) as exc:
            self.close()
            raise CaffemodelError(f"{self.path}: not a valid caffemodel ({exc})") from None

    def _add(self, f: Field, name_no: int, type_no: int, blobs_no: int) -> None:
        name, kind, blobs, shared = "", "", [], []
        for sub in fields(self.buf, f.value_start, f.end):
            if sub.number == name_no and sub.wire_type == 2:
                name = bytes(self.buf[sub.value_start : sub.end]).decode()
            elif sub.number == type_no:
                kind = bytes(self.buf[sub.value_start : sub.end]).decode() if sub.wire_type == 2 else str(sub.value)
            elif sub.number == blobs_no and sub.wire_type == 2:
                blobs.append(_blob(self.buf, sub.value_start, sub.end))
            elif sub.number == LAYER_PARAM and sub.wire_type == 2 and name_no == LAYER_NAME:
                shared.append(_param_name(self.buf, sub))
        if blobs:
            self.copies[name] = self.copies.get(name, 0) + 1
            self.layers.setdefault(name, Layer(name, kind, f.start, f.end, f.value_start, blobs, shared))

    @property
    def duplicates(self) -> list[str]:
        """Layers stored more than once (e.g. two caffemodels concatenated): Caffe would load
        every copy in turn, so no single copy can be checked for it."""
        return [name for name, count in self.copies.items() if count > 1]

    def arrays(self, name: str) -> list[np.ndarray]:
        return [blob.array() for blob in self.layers[name].blobs]

    def params(self, layers: list[str] | None = None) -> int:
        """Parameters: of every layer, or of `layers`; a blob shared by several layers (one
        `param { name }`) is one blob, counted once, as Caffe holds it."""
        names = self.layers if layers is None else layers
        seen: set[str] = set()
        total = 0
        for name in names:
            layer = self.layers[name]
            for index, blob in enumerate(layer.blobs):
                shared = layer.shared[index] if index < len(layer.shared) else ""
                if shared and shared in seen:
                    continue
                seen.add(shared)
                total += blob.data.size
        return total

    def close(self) -> None:
        """Drop this reader's views of the file and unmap it. Arrays still held by callers keep
        the mapping alive; it is then unmapped when the last of them goes."""
        self.layers = {}
        try:
            self.buf.release()
            self._map.close()
        except BufferError:
            pass
        self._file.close()

    def __enter__(self) -> Caffemodel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, path: str | Path, replace: dict[str, list[np.ndarray]]) -> Path:
        """Write a copy with the blobs of the layers in `replace` replaced (atomically)."""
        if self.v1 and replace:
            raise CaffemodelError(f"{self.path} is in the V1 format: upgrade it before changing it")
        with together([path]) as (temporary,), naming(path), temporary.open("wb") as out:
            pos = 0
            for name in [n for n in self.layers if n in replace]:
                layer = self.layers[name]
                out.write(self.buf[pos : layer.start])
                self._write_layer(out, layer, replace[name])
                pos = layer.end
            out.write(self.buf[pos:])
        return Path(path)

    def _write_layer(self, out: BinaryIO, layer: Layer, arrays: list[np.ndarray]) -> None:
        kept = [f for f in fields(self.buf, layer.value_start, layer.end) if f.number != LAYER_BLOBS]
        encoded = [_encode_blob(np.ascontiguousarray(a, dtype="<f4")) for a in arrays]
        length = sum(f.end - f.start for f in kept) + sum(len(head) + a.nbytes for head, a in encoded)
        out.write(tag(NET_LAYER, 2) + varint(length))
        for f in kept:
            out.write(self.buf[f.start : f.end])
        for head, array in encoded:
            out.write(head)
            out.write(memoryview(array).cast("B"))


def _encode_blob(array: np.ndarray) -> tuple[bytes, np.ndarray]:
    """The BlobProto field (tag, length, shape, data header) that precedes the raw floats."""
    dims = b"".join(varint(int(d)) for d in array.shape)
    shape = tag(SHAPE_DIM, 2) + varint(len(dims)) + dims
    body_head = tag(BLOB_SHAPE, 2) + varint(len(shape)) + shape + tag(BLOB_DATA, 2) + varint(array.nbytes)
    return tag(LAYER_BLOBS, 2) + varint(len(body_head) + array.nbytes) + body_head, array


def count_params(weights: str | Path, layers: list[str] | None = None) -> int:
    """The one parameter counter: parameters stored in a caffemodel (of `layers`, if given)."""
    with Caffemodel(weights) as model:
        return model.params(layers)
