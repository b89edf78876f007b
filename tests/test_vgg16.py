"""Full-size VGG-16 (filler weights): conv5_3 and fc6 cut (conv->pool->fc, 7x7), verified exact,
and the paper's six width plans give the paper's parameter counts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pytrim.caffeio.env import caffe_pb2
from pytrim.caffeio.lmdb import write_datums as write_lmdb
from pytrim.caffeio.proto import read_net, set_data_sources, write_text
from pytrim.surgery.choose import Selection
from pytrim.surgery.cut import cut
from pytrim.surgery.verify import verify

ROOT = Path(__file__).resolve().parents[1]
TRAIN_VAL, DEPLOY = ROOT / "prototxt/vgg16/train_val.prototxt", ROOT / "prototxt/vgg16/deploy.prototxt"
# Network Trimming, Table (VGG-16 on ImageNet): conv5_3 / fc6 widths and parameters.
PAPER = [
    (512, 4096, 138_357_544),
    (488, 3477, 116_092_461),
    (451, 2937, 95_472_287),
    (430, 2479, 80_826_839),
    (420, 2121, 70_731_673),
    (400, 1787, 60_646_115),
    (390, 1513, 53_365_677),
]


@pytest.fixture(scope="module")
def vgg(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """VGG-16 with its gaussian filler weights (528 MB) and two generated 256x256 images."""
    d = tmp_path_factory.mktemp("vgg16")
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 256, 256), dtype=np.uint8)
    db = write_lmdb(images, np.array([3, 7]), d / "db", progress=False)
    net = write_text(set_data_sources(read_net(TRAIN_VAL), db, db, batch=1), d / "train_val.prototxt")
    weights = d / "filler.caffemodel"
    # In a child process, so that this test process does not keep a whole VGG-16 in memory.
    code = f"from pytrim.experiments.synthetic import make_weights; make_weights({str(net)!r}, {str(weights)!r})"
    subprocess.run([sys.executable, "-c", code], check=True)
    return {"net": net, "weights": weights, "dir": d}


def plan(c53: int, fc6: int, seed: int = 0) -> dict[str, Selection]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, width, keep in (("conv5_3", 512, c53), ("fc6", 4096, fc6)):
        kept = np.sort(rng.choice(width, keep, replace=False))
        out[name] = Selection(name, width, kept, np.setdiff1d(np.arange(width), kept))
    return out


def test_paper_width_plans_give_the_paper_parameter_counts(vgg: dict[str, Path]) -> None:
    out = vgg["dir"] / "plans"
    for c53, fc6, params in PAPER[1:]:
        result = cut(
            [vgg["net"], DEPLOY],
            vgg["weights"],
            plan(c53, fc6),
            [out / "train_val.prototxt", out / "deploy.prototxt"],
            out / "trimmed.caffemodel",
        )
        assert result.params_before == PAPER[0][2]
        assert result.params_after == params, (c53, fc6)
        assert round(PAPER[0][2] / result.params_after, 2) == round(PAPER[0][2] / params, 2)
        assert result.widths_after == {"conv5_3": c53, "fc6": fc6}


def test_conv5_3_and_fc6_cut_is_exact(vgg: dict[str, Path]) -> None:
    chosen = plan(488, 3477, seed=1)
    out = vgg["dir"] / "trim1"
    cut([vgg["net"]], vgg["weights"], chosen, [out / "train_val.prototxt"], out / "trimmed.caffemodel")
    check = verify(vgg["net"], vgg["weights"], out / "train_val.prototxt", out / "trimmed.caffemodel", chosen)
    assert check.ok, (check.problems, check.max_relative)
    blobs = {c.blob for c in check.checks}
    assert {"conv5_3", "pool5", "fc6", "fc7", "fc8"} <= blobs


def run_tool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, check=False, cwd=cwd)


def test_missing_weights_or_data_is_said_and_nothing_is_done(tmp_path: Path) -> None:
    result = run_tool(str(ROOT / "tools/vgg16.py"), "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "VGG_ILSVRC_16_layers.caffemodel" in result.stderr and "robots.ox.ac.uk" in result.stderr
    assert "ImageNet validation set" in result.stderr and "image-net.org" in result.stderr
    result = run_tool(
        str(ROOT / "tools/vgg16.py"),
        "--weights",
        str(tmp_path / "nope.caffemodel"),
        "--val",
        str(tmp_path),
        "--finetune-iters",
        "0",
        "--out",
        str(tmp_path / "run"),
    )
    assert result.returncode == 2 and "not found: " in result.stderr and "--val-labels" in result.stderr
    assert not (tmp_path / "run").exists()


def jpeg_folder(folder: Path, count: int) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    lines = []
    for i in range(count):
        name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        Image.fromarray(rng.integers(0, 256, (300 + i, 280, 3), dtype=np.uint8)).save(folder / name, "JPEG")
        lines.append(f"{name} {i * 7 % 1000}")
    (folder / "val.txt").write_text("\n".join(lines) + "\n")
    return folder


def first_labels(db: Path) -> list[int]:
    import lmdb

    with lmdb.open(str(db), readonly=True, lock=False) as env, env.begin() as txn:
        datums = [caffe_pb2().Datum.FromString(value) for _, value in txn.cursor()]
    assert all((d.channels, d.height, d.width) == (3, 256, 256) for d in datums)
    return [d.label for d in datums]


def test_jpeg_folder_is_converted_shuffled_with_a_seeded_subset(tmp_path: Path) -> None:
    folder = jpeg_folder(tmp_path / "val", 8)
    listed = [int(line.split()[1]) for line in (folder / "val.txt").read_text().splitlines()]

    def prepare(out: str, *extra: str) -> list[int]:
        args = ("--val", folder, "--val-labels", folder / "val.txt", "--out", tmp_path / out, *extra)
        result = run_tool(ROOT / "data/prepare_imagenet.py", *args)
        assert result.returncode == 0, result.stderr
        return first_labels(tmp_path / out / "val_lmdb")

    everything = prepare("all")
    assert sorted(everything) == sorted(listed) and everything != listed  # shuffled, nothing lost
    subset = prepare("three", "--images", "3")
    assert len(subset) == 3 and set(subset) <= set(listed) and subset == prepare("again", "--images", "3")
    assert prepare("other", "--images", "3", "--seed", "1") != subset  # the seed decides the sample
    bad = run_tool(ROOT / "data/prepare_imagenet.py", "--val", folder, "--out", tmp_path / "x")
    assert bad.returncode == 1 and "--val-labels FILE is needed" in bad.stderr
    # The source as its own target: refused, the LMDB kept.
    same = run_tool(ROOT / "data/prepare_imagenet.py", "--val", tmp_path / "all/val_lmdb", "--out", tmp_path / "all")
    assert same.returncode == 1 and "refusing to overwrite" in same.stderr
    assert len(first_labels(tmp_path / "all/val_lmdb")) == 8


def test_real_path_with_a_width_plan_on_filler_weights(vgg: dict[str, Path], tmp_path: Path) -> None:
    """tools/vgg16.py as a user runs it (JPEGs + labels, V1-free weights), Trim-6 widths."""
    folder = jpeg_folder(tmp_path / "val", 2)
    result = run_tool(
        str(ROOT / "tools/vgg16.py"),
        "--weights",
        str(vgg["weights"]),
        "--val",
        str(folder),
        "--val-labels",
        str(folder / "val.txt"),
        "--widths",
        "conv5_3=390,fc6=1513",
        "--finetune-iters",
        "0",
        "--out",
        str(tmp_path / "run"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    report = json.loads((tmp_path / "run/report.json").read_text())
    assert report["baseline"]["params"] == 138_357_544
    (trim,) = report["iterations"]
    assert trim["params"] == 53_365_677 and round(trim["compression"], 2) == 2.59
    assert trim["widths"].split("-")[12:14] == ["390", "1513"]
    assert trim["verify_max_relative_diff"] <= 1e-5
