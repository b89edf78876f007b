"""The ONNX graph being written from a Caffe net: its nodes and initializers, and which ONNX value
holds each Caffe blob now.

ONNX values are written once, Caffe blobs are overwritten by in-place layers (ReLU, BatchNorm,
Scale, Dropout): a top gets the blob's own name the first time and `<blob>@<layer>` after an
in-place layer, and `current` says which value a blob's name means at each point of the walk.
Caffe keeps only a blob's last value, so verification compares that one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytrim.core.errors import BadInput


class Untranslatable(BadInput):
    """A layer with no ONNX meaning (a Python layer, a loss in a deploy net, an unknown type)."""


@dataclass
class Graph:
    """Nodes, initializers and value names of the ONNX graph under construction."""

    shapes: dict[str, list[int]]  # Caffe's blob shapes (TEST phase)
    weights: Callable[[str], list[np.ndarray]]  # a layer's parameter blobs, in the net's shapes
    nodes: list[Any] = field(default_factory=list)
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    current: dict[str, str] = field(default_factory=dict)  # Caffe blob -> the ONNX value holding it
    taken: set[str] = field(default_factory=set)
    folded: dict[str, Any] = field(default_factory=dict)  # a BatchNorm's node, while a Scale may join it

    def value(self, blob: str) -> str:
        """The ONNX value holding a Caffe blob now."""
        return self.current[blob]

    def top(self, blob: str, layer: str) -> str:
        """A fresh ONNX value for a layer's top; the blob's name now means it."""
        name = blob if blob not in self.taken else f"{blob}@{layer}"
        index = 1
        while name in self.taken:
            index += 1
            name = f"{blob}@{layer}#{index}"
        self.taken.add(name)
        self.current[blob] = name
        return name

    def alias(self, blob: str, value: str) -> None:
        """A top that is another value unchanged (Split, Dropout, Flatten to the same shape)."""
        self.current[blob] = value

    def const(self, name: str, array: np.ndarray | list[int] | list[float], dtype: Any = np.float32) -> str:
        """An initializer (a constant tensor) under a unique name."""
        unique, index = name, 1
        while unique in self.initializers or unique in self.taken:
            index += 1
            unique = f"{name}#{index}"
        self.initializers[unique] = np.asarray(array, dtype=dtype)
        self.taken.add(unique)
        return unique

    def temp(self, name: str) -> str:
        """A value inside one layer's translation."""
        unique, index = name, 1
        while unique in self.taken:
            index += 1
            unique = f"{name}#{index}"
        self.taken.add(unique)
        return unique

    def node(self, op: str, inputs: list[str], outputs: list[str], name: str, **attrs: Any) -> Any:
        from onnx import helper

        made = helper.make_node(op, inputs, outputs, name=self.temp(name), **attrs)
        self.nodes.append(made)
        return made

    def shape(self, blob: str) -> list[int]:
        return [int(d) for d in self.shapes[blob]]


def refuse(layer: Any, why: str) -> Untranslatable:
    return Untranslatable(f"layer {layer.name!r} ({layer.type}) {why}: nothing was written")
