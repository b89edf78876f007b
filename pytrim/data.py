"""The TEST data a net is measured on, and the one batch loop over it.

A net's TEST images come either from its own data layer (Data on an LMDB, ImageData on an
image list, HDF5Data on HDF5 files), which `forward()` pulls from, or, for a deploy net
(Input or MemoryData), from a source pytrim reads and feeds: an LMDB of Caffe Datum
records or an image list ("path label" lines), centre-cropped to the net's input size,
minus a per-channel mean, times a scale, in Caffe's BGR order (`Feed`).

Caffe's own layers wrap around at the end of their data, so `batches` runs whole
`forward()` passes (a partial pass can skip an in-place ReLU) and says how many images of
each batch are new: collection, evaluation and the benchmarks count every image once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.datasets import lmdb_entries, read_datum, read_image
from pytrim.errors import BadInput
from pytrim.protoutil import layers_in_phase


@dataclass
class Feed:
    """Where a deploy net's inputs come from, and how they are prepared."""

    path: Path  # an LMDB folder, or an image list file ("path label", paths relative to `root`)
    mean: tuple[float, ...] = ()  # per channel (BGR), subtracted before scaling
    scale: float = 1.0
    root: Path | None = None  # image list: folder the paths are relative to (default: the list's)


class Reader:
    """Reads images (uint8 C x H x W, BGR) and labels from an LMDB or an image list."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        if (feed.path / "data.mdb").is_file():
            import lmdb

            self.env = lmdb.open(str(feed.path), readonly=True, lock=False)
            self.keys = list(self._keys())
        elif feed.path.is_file():
            self.env = None
            self.lines = [line.rsplit(maxsplit=1) for line in feed.path.read_text().splitlines() if line.strip()]
            if any(len(parts) != 2 or not parts[1].lstrip("-").isdigit() for parts in self.lines):
                raise BadInput(f"{feed.path}: expected lines 'path label'")
        else:
            raise BadInput(f"--data {feed.path}: neither an LMDB folder nor an image list file")

    def _keys(self) -> Iterator[bytes]:
        with self.env.begin() as txn:
            yield from txn.cursor().iternext(keys=True, values=False)

    def __len__(self) -> int:
        return len(self.keys) if self.env is not None else len(self.lines)

    def read(self, index: int) -> tuple[np.ndarray, int]:
        if self.env is not None:
            return self._datum(index)
        path, label = self.lines[index]
        return self._image(Path(path)), int(label)

    def _datum(self, index: int) -> tuple[np.ndarray, int]:
        with self.env.begin() as txn:
            return read_datum(txn.get(self.keys[index]))

    def _image(self, path: Path) -> np.ndarray:
        full = (self.feed.root or self.feed.path.parent) / path
        if not full.is_file():
            raise BadInput(f"{self.feed.path}: image not found: {full}")
        return read_image(full)


def prepare_image(image: np.ndarray, shape: tuple[int, ...], feed: Feed) -> np.ndarray:
    """Centre crop to the net's (C, H, W) (resizing first when the image is smaller), minus
    the mean, times the scale."""
    channels, height, width = shape
    if image.shape[0] != channels:
        if channels == 1:
            image = image.mean(axis=0, keepdims=True).astype(np.uint8)
        else:
            raise BadInput(f"{feed.path}: images have {image.shape[0]} channels, the net takes {channels}")
    if image.shape[1] < height or image.shape[2] < width:
        from PIL import Image

        side = max(height, width)
        image = (
            np.asarray(Image.fromarray(image.transpose(1, 2, 0).squeeze()).resize((side, side)))
            .reshape(side, side, -1)
            .transpose(2, 0, 1)
        )
    top, left = (image.shape[1] - height) // 2, (image.shape[2] - width) // 2
    out = image[:, top : top + height, left : left + width].astype(np.float32)
    if feed.mean:
        out -= np.asarray(feed.mean, np.float32).reshape(-1, 1, 1)
    return out * feed.scale


@dataclass
class DataSource:
    """The TEST images of a net: its own data layer (reader None) or a fed source."""

    layer: str
    data_blob: str
    label_blob: str | None
    source: Path
    batch: int
    total: int
    reader: Reader | None = None
    feed_spec: Feed | None = None
    labels: list[int] = field(default_factory=list)  # fed labels of the current batch
    memory: bool = False  # fed through a MemoryData layer
    held: tuple = ()

    def feed(self, net: Any, index: int) -> None:
        """Put batch `index` into the net's input blob (a data layer reads its own)."""
        if self.reader is None:
            return
        assert self.feed_spec is not None
        shape = net.blobs[self.data_blob].data.shape
        start = index * self.batch
        batch = np.zeros(shape, np.float32)
        self.labels = []
        for slot in range(min(self.batch, self.total - start)):
            image, label = self.reader.read(start + slot)
            batch[slot] = prepare_image(image, shape[1:], self.feed_spec)
            self.labels.append(label)
        if self.memory:  # MemoryData replaces its top with the arrays it is given
            labels = np.zeros((shape[0], 1, 1, 1), np.float32)
            labels[: len(self.labels), 0, 0, 0] = self.labels
            self.held = (batch, labels)  # Caffe keeps pointers into them until the next call
            net.set_input_arrays(*self.held)
        else:
            net.blobs[self.data_blob].data[...] = batch


def _own_total(layer: Any) -> tuple[Path, int, int]:
    """(source, images, batch) of a data layer that reads its own data."""
    if layer.type == "Data":
        return Path(layer.data_param.source), lmdb_entries(layer.data_param.source), int(layer.data_param.batch_size)
    if layer.type == "ImageData":
        source = Path(layer.image_data_param.source)
        lines = [line for line in source.read_text().splitlines() if line.strip()] if source.is_file() else []
        return source, len(lines), int(layer.image_data_param.batch_size)
    source = Path(layer.hdf5_data_param.source)
    import h5py

    files = [line.strip() for line in source.read_text().splitlines() if line.strip()]
    total = 0
    for name in files:
        with h5py.File(name, "r") as handle:
            total += int(handle[layer.top[0]].shape[0])
    return source, total, int(layer.hdf5_data_param.batch_size)


def data_source(net_param: Any, limit: int | None = None, feed: Feed | None = None) -> DataSource:
    """The net's TEST images (all, or the first `limit`): its own data layer, or `feed` for
    a net whose input is an Input or MemoryData layer."""
    if limit is not None and limit < 1:
        raise BadInput(f"--limit must be at least 1, not {limit}")
    for layer in layers_in_phase(net_param, "TEST"):
        label = layer.top[1] if len(layer.top) > 1 else None
        if layer.type in ("Data", "ImageData", "HDF5Data") and feed is None:
            source, total, batch = _own_total(layer)
            if total == 0:
                raise BadInput(f"the data source {source} of layer {layer.name!r} is empty")
            return DataSource(layer.name, layer.top[0], label, source, batch, min(total, limit or total))
        if layer.type in ("Data", "ImageData", "HDF5Data"):
            raise BadInput(f"the net reads its own images ({layer.type} {layer.name!r}): --data is for deploy nets")
        if layer.type in ("Input", "MemoryData") and feed is not None:
            return fed_source(net_param, layer, feed, limit)
    if feed is not None and net_param.input:
        return fed_source(net_param, None, feed, limit)
    if feed is None and (net_param.input or any(layer.type in ("Input", "MemoryData") for layer in net_param.layer)):
        raise BadInput("the net's input is an Input or MemoryData layer: give its TEST images with --data")
    raise BadInput("the net has no TEST-phase data layer to read images from")


def fed_source(net_param: Any, layer: Any, feed: Feed, limit: int | None) -> DataSource:
    """A deploy net's images fed from `feed` (layer None: the old `input:` fields)."""
    reader = Reader(feed)
    total = min(len(reader), limit or len(reader))
    if total == 0:
        raise BadInput(f"--data {feed.path} holds no images")
    if layer is None:
        dims = net_param.input_shape[0].dim if net_param.input_shape else net_param.input_dim
        return DataSource("input", net_param.input[0], None, feed.path, int(dims[0]), total, reader, feed)
    memory = layer.type == "MemoryData"
    batch = int(layer.memory_data_param.batch_size) if memory else int(layer.input_param.shape[0].dim[0])
    return DataSource(layer.name, layer.top[0], None, feed.path, batch, total, reader, feed, memory=memory)


def batches(net: Any, data: DataSource, desc: str = "images", progress: bool = True) -> Iterator[int]:
    """Run one whole forward pass per batch; yield the number of new images in it."""
    from tqdm import tqdm

    seen = 0
    with tqdm(total=data.total, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for index in range(math.ceil(data.total / data.batch)):
            data.feed(net, index)
            net.forward()
            take = min(data.batch, data.total - seen)
            yield take
            seen += take
            bar.update(take)
