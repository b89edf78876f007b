"""A deploy net (Input or MemoryData) fed its TEST images by pytrim from an LMDB or an image
list gives the same statistics and accuracy as the train_val net reading them itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, pytrim, small_body, toy_images, write_net

from pytrim.caffeio.lmdb import write_datums as write_lmdb
from pytrim.feeds.source import Feed
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
