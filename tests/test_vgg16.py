"""Full-size VGG-16 (filler weights): conv5_3 and fc6 cut (conv->pool->fc, 7x7), verified exact,
and the paper's six width plans give the paper's parameter counts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pytrim.choose import Selection
from pytrim.cut import cut
from pytrim.datasets import write_lmdb
from pytrim.synthetic import synthetic_net
from pytrim.verify import verify

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
    net = synthetic_net(TRAIN_VAL, d / "train_val.prototxt", db, db, batch=1)
    weights = d / "filler.caffemodel"
    # In a child process, so that this test process does not keep a whole VGG-16 in memory.
    code = f"from pytrim.synthetic import make_weights; make_weights({str(net)!r}, {str(weights)!r})"
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
