"""Images as Caffe reads them, and the one TEST-phase transform.

Decoding and resizing go through OpenCV (PyPI's opencv-python-headless; measured to give
Caffe's ImageData layer's pixels exactly, colour and grey, on JPEGs of other sizes), as
Caffe's `ReadImageToCVMat` and `DecodeDatumToCVMat` do: BGR channel order, grey images
decoded as grey (not a mean of the channels), `cv::resize` with bilinear interpolation.
`Transform` is Caffe's DataTransformer in the TEST phase (centre crop, mean file or mean
values, scale), element by element in float32 in Caffe's order, so its inputs are
bit-identical to the Data layer's; before it, images of another size are resized to the
size a layer names (new_height x new_width) or to a short side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.env import caffe_pb2
from pytrim.caffeio.lmdb import parse_datum
from pytrim.core.errors import BadInput, DatasetError


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise BadInput(f"OpenCV for Python is not installed ({exc}): make venv installs it") from None
    return cv2


def _chw(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray((image[:, :, None] if image.ndim == 2 else image).transpose(2, 0, 1))


def decode(data: bytes, color: bool = True, where: str = "") -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, ...) as (C, H, W) uint8: BGR, or grey when not `color`."""
    cv2 = _cv2()
    flag = cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is None:
        raise DatasetError(f"{where}: not an image OpenCV can decode")
    return _chw(image)


def read_image(path: str | Path, color: bool = True) -> np.ndarray:
    """An image file as Caffe's ImageData layer reads it: (C, H, W) uint8, BGR or grey."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"image not found: {path}")
    return decode(path.read_bytes(), color, str(path))


def decode_datum(value: bytes, color: bool | None = None, where: str = "") -> tuple[np.ndarray, int]:
    """A Datum record's image (C, H, W) and label; encoded images are decoded (in colour
    unless `color` is False; None: colour)."""
    datum = parse_datum(value, where)
    if datum.encoded:
        return decode(datum.data, color is not False, where), int(datum.label)
    shape = (datum.channels, datum.height, datum.width)
    if datum.data:
        return np.frombuffer(datum.data, np.uint8).reshape(shape), int(datum.label)
    return np.asarray(datum.float_data, np.float32).reshape(shape), int(datum.label)


def to_channels(image: np.ndarray, channels: int, where: str = "") -> np.ndarray:
    """An image with the net's number of channels: colour to grey as OpenCV converts it."""
    if image.shape[0] == channels:
        return image
    if channels == 1 and image.shape[0] == 3 and image.dtype == np.uint8:
        return _chw(_cv2().cvtColor(np.ascontiguousarray(image.transpose(1, 2, 0)), _cv2().COLOR_BGR2GRAY))
    raise BadInput(f"{where}: images have {image.shape[0]} channels, the net takes {channels}")


def resize(image: np.ndarray, size: tuple[int, int] | int) -> np.ndarray:
    """(C, H, W) resized as cv::resize does (bilinear) to (height, width), or so that its
    short side is `size` (the aspect ratio kept)."""
    height, width = image.shape[1:]
    if isinstance(size, int):
        ratio = size / min(height, width)
        size = (max(1, round(height * ratio)), max(1, round(width * ratio)))
    if (height, width) == tuple(size):
        return image
    hwc = np.ascontiguousarray(image.transpose(1, 2, 0))
    return _chw(_cv2().resize(hwc, (int(size[1]), int(size[0]))))


@dataclass
class Transform:
    """Caffe's DataTransformer in the TEST phase: centre crop to `crop` (height, width),
    minus the mean file's values (at the crop's place) or the per-channel mean values,
    times `scale`; `resize` first brings each image to (height, width) or to a short side."""

    scale: float = 1.0
    mean_values: tuple[float, ...] = ()
    mean: np.ndarray | None = None  # a mean file's (C, H, W)
    crop: tuple[int, int] | None = None
    resize: tuple[int, int] | int | None = None

    @classmethod
    def of_layer(cls, layer: Any) -> Transform:
        """The transform of a Data layer (its transform_param), without mirroring."""
        t = layer.transform_param
        if t.mirror:
            raise BadInput(f"Data layer {layer.name!r} mirrors at random: its images would not be reproducible")
        mean = None
        if t.mean_file:
            blob = caffe_pb2().BlobProto()
            blob.ParseFromString(Path(t.mean_file).read_bytes())
            mean = np.asarray(blob.data, np.float32).reshape(blob.channels, blob.height, blob.width)
        scale = float(t.scale) if t.HasField("scale") else 1.0
        crop = (int(t.crop_size), int(t.crop_size)) if t.crop_size else None
        return cls(scale, tuple(t.mean_value), mean, crop)

    def sized(self, image: np.ndarray) -> np.ndarray:
        """One image resized as `resize` says, and up to the crop when it is smaller."""
        if self.resize is not None:
            image = resize(image, self.resize)
        if self.crop is not None and (image.shape[1] < self.crop[0] or image.shape[2] < self.crop[1]):
            image = resize(image, (max(image.shape[1], self.crop[0]), max(image.shape[2], self.crop[1])))
        return image

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(..., C, H, W) uint8 or float32 -> the float32 inputs, as Caffe computes them (the
        same operations in the same order, element by element)."""
        channels, height, width = images.shape[-3:]
        top, left, out_h, out_w = 0, 0, height, width
        if self.crop is not None:
            out_h, out_w = self.crop
            top, left = (height - out_h) // 2, (width - out_w) // 2
        x = images[..., top : top + out_h, left : left + out_w].astype(np.float32)
        if self.mean is not None:
            x = x - self.mean[:, top : top + out_h, left : left + out_w]
        elif self.mean_values:
            values = self.mean_values * channels if len(self.mean_values) == 1 else self.mean_values
            x = x - np.asarray(values, np.float32).reshape(-1, 1, 1)
        return x * np.float32(self.scale)
