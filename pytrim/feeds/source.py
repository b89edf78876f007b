"""The TEST data a net is measured on, and the one batch loop over it.

A net's TEST images come either from its own data layer (Data on an LMDB, ImageData on an
image list, HDF5Data on HDF5 files), which `forward()` pulls from, or from records pytrim
reads and feeds (`Feeder`): a deploy net's images (Input or MemoryData; `Feed`: an LMDB of
Caffe Datum records or an image list, "path label" lines), or a range of an LMDB's records
fed to an Input copy of a train_val (a shard on a Ray worker). Fed images go through the one
TEST transform (pytrim.feeds.image.Transform), so they are the inputs Caffe would make.

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

from pytrim.caffeio.lmdb import Lmdb, entries
from pytrim.caffeio.proto import layers_in_phase
from pytrim.core.errors import BadInput
from pytrim.feeds.image import Transform, decode_datum, read_image, to_channels

DATA_LAYERS = ("Data", "ImageData", "HDF5Data")
# A deploy net fed an image list is given images resized to this short side first, as
# ImageNet nets are evaluated (resize to 256, centre crop 224); for small inputs, none.
SHORT_SIDE = 256


@dataclass
class Feed:
    """Where a deploy net's inputs come from (--feed), and how they are prepared."""

    path: Path  # an LMDB folder, or an image list file ("path label", paths relative to `root`)
    mean: tuple[float, ...] = ()  # per channel (BGR), subtracted before scaling
    scale: float = 1.0
    root: Path | None = None  # image list: folder the paths are relative to (default: the list's)
    resize: tuple[int, int] | int | None = None  # (height, width) or a short side; None: see SHORT_SIDE


class Records:
    """Images (uint8 C x H x W, BGR or grey) and labels by position, from an LMDB of Datum
    records or an image list; opened lazily, so that it can travel to a Ray worker."""

    def __init__(self, path: Path, root: Path | None = None) -> None:
        self.path, self.root = Path(path), root
        self.lines: list[list[str]] | None = None
        self._db: Lmdb | None = None
        if (self.path / "data.mdb").is_file():
            self.count = entries(self.path)
        elif self.path.is_file():
            self.lines = [line.rsplit(maxsplit=1) for line in self.path.read_text().splitlines() if line.strip()]
            if any(len(parts) != 2 or not parts[1].lstrip("-").isdigit() for parts in self.lines):
                raise BadInput(f"{self.path}: expected lines 'path label'")
            self.count = len(self.lines)
        else:
            raise BadInput(f"--feed {self.path}: neither an LMDB folder nor an image list file")

    @property
    def is_list(self) -> bool:
        return self.lines is not None

    def __len__(self) -> int:
        return self.count

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_db": None}

    def read(self, positions: list[int], color: bool) -> list[tuple[np.ndarray, int]]:
        if self.lines is None:
            self._db = self._db or Lmdb(self.path)
            values = self._db.values(positions)
            return [decode_datum(v, color, f"{self.path}: record {p}") for p, v in zip(positions, values, strict=True)]
        folder = self.root or self.path.parent
        return [(read_image(folder / self.lines[p][0], color), int(self.lines[p][1])) for p in positions]


@dataclass
class Feeder:
    """Records at `positions`, fed batch by batch into the net's input blob (and its label
    blob, when the net has one), through `transform`."""

    records: Records
    positions: list[int]
    transform: Transform
    memory: bool = False  # fed through a MemoryData layer
    labels: list[int] = field(default_factory=list)  # the labels of the current batch
    held: tuple = ()

    def batch(self, net: Any, data_blob: str, index: int, size: int) -> np.ndarray:
        """Batch `index` as the float32 input of shape net.blobs[data_blob]; sets `labels`."""
        shape = net.blobs[data_blob].data.shape
        chosen = self.positions[index * size : (index + 1) * size]
        records = self.records.read(chosen, shape[1] != 1)
        images = [self.transform.sized(to_channels(image, shape[1], str(self.records.path))) for image, _ in records]
        self.labels = [label for _, label in records]
        out = np.zeros(shape, np.float32)
        if images and len({image.shape for image in images}) == 1:  # one numpy operation for the batch
            out[: len(images)] = self.transform(np.stack(images))
        else:
            for slot, image in enumerate(images):
                out[slot] = self.transform(image)
        return out

    def feed(self, net: Any, data_blob: str, label_blob: str | None, index: int, size: int) -> None:
        batch = self.batch(net, data_blob, index, size)
        if self.memory:  # MemoryData replaces its top with the arrays it is given
            labels = np.zeros((batch.shape[0], 1, 1, 1), np.float32)
            labels[: len(self.labels), 0, 0, 0] = self.labels
            self.held = (batch, labels)  # Caffe keeps pointers into them until the next call
            net.set_input_arrays(*self.held)
            return
        net.blobs[data_blob].data[...] = batch
        if label_blob is not None:
            net.blobs[label_blob].data[: len(self.labels)] = self.labels


@dataclass
class DataSource:
    """The TEST images of a net: its own data layer (feeder None) or fed records."""

    layer: str
    data_blob: str
    label_blob: str | None
    source: Path
    batch: int
    total: int
    feeder: Feeder | None = None
    first_batch: int = 0  # this source's first batch in the whole pass (a shard's place)

    @property
    def labels(self) -> list[int]:
        return self.feeder.labels if self.feeder is not None else []

    def feed(self, net: Any, index: int) -> None:
        """Put batch `index` into the net's input blob (a data layer reads its own)."""
        if self.feeder is not None:
            self.feeder.feed(net, self.data_blob, self.label_blob, index, self.batch)


def _own_total(layer: Any) -> tuple[Path, int, int]:
    """(source, images, batch) of a data layer that reads its own data."""
    if layer.type == "Data":
        return Path(layer.data_param.source), entries(layer.data_param.source), int(layer.data_param.batch_size)
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


def check_images(images: int | None) -> None:
    if images is not None and images < 1:
        raise BadInput(f"--images must be at least 1, not {images}")


def data_source(net_param: Any, images: int | None = None, feed: Feed | None = None) -> DataSource:
    """The net's TEST images (all, or the first `images`): its own data layer, or `feed` for
    a net whose input is an Input or MemoryData layer."""
    check_images(images)
    for layer in layers_in_phase(net_param, "TEST"):
        label = layer.top[1] if len(layer.top) > 1 else None
        if layer.type in DATA_LAYERS and feed is None:
            source, total, batch = _own_total(layer)
            if total == 0:
                raise BadInput(f"the data source {source} of layer {layer.name!r} is empty")
            return DataSource(layer.name, layer.top[0], label, source, batch, min(total, images or total))
        if layer.type in DATA_LAYERS:
            raise BadInput(f"the net reads its own images ({layer.type} {layer.name!r}): --feed is for deploy nets")
        if layer.type in ("Input", "MemoryData") and feed is not None:
            return fed_source(net_param, layer, feed, images)
    if feed is not None and net_param.input:
        return fed_source(net_param, None, feed, images)
    if feed is None and (net_param.input or any(layer.type in ("Input", "MemoryData") for layer in net_param.layer)):
        raise BadInput("the net's input is an Input or MemoryData layer: give its TEST images with --feed")
    raise BadInput("the net has no TEST-phase data layer to read images from")


def input_shape(net_param: Any, layer: Any) -> list[int]:
    """The (N, C, H, W) a deploy net's input layer declares (layer None: the old `input:` fields)."""
    if layer is None:
        return list(net_param.input_shape[0].dim if net_param.input_shape else net_param.input_dim)
    if layer.type == "MemoryData":
        p = layer.memory_data_param
        return [int(p.batch_size), int(p.channels), int(p.height), int(p.width)]
    return [int(d) for d in layer.input_param.shape[0].dim]


def feed_transform(feed: Feed, shape: list[int], records: Records) -> Transform:
    """The transform of a feed: resize (image lists: SHORT_SIDE unless the net's input is
    small, or as --resize says), centre crop to the net's input, mean, scale."""
    resize = feed.resize
    channels = int(shape[1])
    if len(feed.mean) not in (0, 1, channels):
        given = ",".join(f"{v:g}" for v in feed.mean)
        raise BadInput(f"--mean {given}: {len(feed.mean)} values for a net whose input has {channels} channel(s): "
                       "give one value, or one per channel")  # fmt: skip
    if resize is None and records.is_list and min(shape[2:]) > SHORT_SIDE // 2:
        resize = SHORT_SIDE
    return Transform(feed.scale, feed.mean, None, (int(shape[2]), int(shape[3])), resize)


def fed_source(net_param: Any, layer: Any, feed: Feed, images: int | None) -> DataSource:
    """A deploy net's images fed from `feed`."""
    records = Records(feed.path, feed.root)
    total = min(len(records), images or len(records))
    if total == 0:
        raise BadInput(f"--feed {feed.path} holds no images")
    shape = input_shape(net_param, layer)
    feeder = Feeder(records, list(range(total)), feed_transform(feed, shape, records), layer is not None
                    and layer.type == "MemoryData")  # fmt: skip
    name, top = ("input", net_param.input[0]) if layer is None else (layer.name, layer.top[0])
    return DataSource(name, top, None, feed.path, int(shape[0]), total, feeder)


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
