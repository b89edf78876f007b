"""A deploy net (Input or MemoryData) fed its TEST images by pytrim from an LMDB or an image
list gives the same statistics and accuracy as the train_val net reading them itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, pytrim, small_body, toy_images, write_net

from pytrim.caffeio.lmdb import write_datums as write_lmdb
from pytrim.caffeio.proto import read_net
from pytrim.feeds.source import Feed, data_source
from pytrim.stats.collect import collect
from pytrim.stats.evaluate import evaluate
from pytrim.surgery.choose import Selection
from pytrim.surgery.cut import cut
from pytrim.surgery.verify import verify

SCALE = "0.00390625"


def image_list(folder: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Lossless PNGs and a 'path label' list."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
        lines.append(f"{i:03d}.png {label}")
    (folder / "list.txt").write_text("\n".join(lines) + "\n")
    return folder / "list.txt"


def test_deploy_fed_from_lmdb_or_list_equals_the_data_layer(small_net: dict[str, Path], tmp_path: Path) -> None:
    images, labels = toy_images(25)
    listing = image_list(tmp_path / "pngs", images, labels)
    reference = evaluate(small_net["net"], small_net["weights"], progress=False)
    stats = collect(small_net["net"], small_net["weights"], progress=False)
    for source in (small_net["db"], listing):
        feed = Feed(source, scale=float(SCALE))
        fed = evaluate(small_net["deploy"], small_net["weights"], progress=False, feed=feed)
        assert (fed.top1, fed.top5, fed.images) == (reference.top1, reference.top5, reference.images) == (
            reference.top1, reference.top5, 25)  # fmt: skip
        again = collect(small_net["deploy"], small_net["weights"], progress=False, feed=feed)
        for name, layer in stats.layers.items():
            np.testing.assert_array_equal(again.layers[name].points[0].zeros, layer.points[0].zeros)
    r = pytrim("evaluate", "--net", small_net["deploy"], "--weights", small_net["weights"], "--feed", listing,
               "--scale", SCALE, "--quiet", "--result", tmp_path / "r.json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "r.json").read_text())["top1"] == reference.top1


def memory_net(n, data):
    return small_body(n, data)


def test_memory_data_net_is_fed_too(caffe, small_net: dict[str, Path], tmp_path: Path) -> None:
    from caffe import layers as L

    n = caffe.NetSpec()
    n.data, n.label = L.MemoryData(ntop=2, memory_data_param={"batch_size": 10, "channels": 1, "height": 28,
                                                               "width": 28})  # fmt: skip
    small_body(n, n.data)
    proto = write_net(tmp_path / "memory.prototxt", str(n.to_proto()))
    reference = evaluate(small_net["net"], small_net["weights"], progress=False)
    fed = evaluate(proto, small_net["weights"], progress=False, feed=Feed(small_net["db"], scale=float(SCALE)))
    assert (fed.top1, fed.images) == (reference.top1, reference.images)


def test_verify_feeds_both_nets_the_same_images(small_net: dict[str, Path], tmp_path: Path) -> None:
    chosen = {"conv2": Selection("conv2", 8, np.array([0, 2, 4, 6]), np.array([1, 3, 5, 7]))}
    out = tmp_path / "cut"
    cut([small_net["deploy"]], small_net["weights"], chosen, [out / "deploy.prototxt"], out / "t.caffemodel")
    feed = Feed(small_net["db"], scale=float(SCALE))
    check = verify(small_net["deploy"], small_net["weights"], out / "deploy.prototxt", out / "t.caffemodel", chosen,
                   batches=3, feed=feed)  # fmt: skip
    assert check.ok and check.max_relative <= 1e-5


def test_data_option_errors_are_one_line(small_net: dict[str, Path], tmp_path: Path) -> None:
    base = ("--weights", small_net["weights"], "--quiet")
    assert_one_line_error(pytrim("evaluate", "--net", small_net["deploy"], *base), "give its TEST images with --feed")
    r = pytrim("evaluate", "--net", small_net["net"], *base, "--feed", small_net["db"])
    assert_one_line_error(r, "reads its own images")
    bad = write_net(tmp_path / "bad.txt", "no-label-here\n")
    assert_one_line_error(pytrim("evaluate", "--net", small_net["deploy"], *base, "--feed", bad), "'path label'")
    r = pytrim("evaluate", "--net", small_net["deploy"], *base, "--feed", small_net["db"], "--mean", "a,b")
    assert_one_line_error(r, "--mean")


@pytest.mark.parametrize("side", [32])
def test_larger_images_are_centre_cropped(small_net: dict[str, Path], tmp_path: Path, side: int) -> None:
    images, labels = toy_images(10, side=side)
    db = write_lmdb(images, labels, tmp_path / "big", progress=False)
    fed = evaluate(small_net["deploy"], small_net["weights"], progress=False, feed=Feed(db, scale=float(SCALE)))
    cropped = write_lmdb(images[:, 2:30, 2:30].copy(), labels, tmp_path / "cropped", progress=False)
    same = evaluate(small_net["deploy"], small_net["weights"], progress=False, feed=Feed(cropped, scale=float(SCALE)))
    assert (fed.top1, fed.images) == (same.top1, same.images)


def colour_jpegs(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    """Colour JPEGs of the given (height, width), not the net's size, and a 'path label' list."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng, lines = np.random.default_rng(3), []
    for i, (h, w) in enumerate(sizes):
        y, x = np.mgrid[0:h, 0:w]
        image = np.stack([x * 255 // w, y * 255 // h, (x + y) * 97 % 256], -1) + rng.integers(-20, 20, (h, w, 3))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)
        lines.append(f"{i}.jpg {i % 3}")
    (folder / "list.txt").write_text("\n".join(lines) + "\n")
    return folder / "list.txt"


@pytest.mark.parametrize("color", [True, False])
def test_the_feed_gives_caffes_imagedata_pixels(caffe, tmp_path: Path, color: bool) -> None:
    """Colour JPEGs of other sizes, resized to the layer's new_height x new_width, centre
    cropped, mean and scale: the fed input equals Caffe's own ImageData layer bit for bit
    (grey: decoded as grey, as Caffe does)."""
    listing = colour_jpegs(tmp_path / "jpegs", [(300, 400), (333, 251), (260, 260), (500, 375)])
    mean = "104,117,123" if color else "110"
    net = tmp_path / "imagedata.prototxt"
    net.write_text(f'layer {{ name: "d" type: "ImageData" top: "data" top: "label" transform_param {{ crop_size: 224 '
                   f'{" ".join(f"mean_value: {m}" for m in mean.split(","))} scale: 0.5 }} image_data_param {{ '
                   f'source: "{listing}" root_folder: "{listing.parent}/" batch_size: 4 new_height: 256 '
                   f'new_width: 240 is_color: {str(color).lower()} }} }}')  # fmt: skip
    reference = caffe.Net(str(net), caffe.TEST)
    reference.forward()
    shape = [4, 3 if color else 1, 224, 224]
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ '
                      f'{" ".join(f"dim: {d}" for d in shape)} }} }} }}')  # fmt: skip
    values = tuple(float(m) for m in mean.split(","))
    data = data_source(read_net(deploy), feed=Feed(listing, values, 0.5, listing.parent, (256, 240)))
    fed = caffe.Net(str(deploy), caffe.TEST)
    data.feed(fed, 0)
    assert np.array_equal(fed.blobs["data"].data, reference.blobs["data"].data)
    assert data.labels == reference.blobs["label"].data.astype(int).tolist()
