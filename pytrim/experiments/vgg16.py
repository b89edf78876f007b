"""The paper's headline experiment: VGG-16 trimmed on ImageNet (prototxt/vgg16/trim.toml), on
the published weights and the user's ImageNet; and its synthetic stand-in (the same machinery
on the full-size net with random weights and generated images)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytrim.caffeio.lmdb import entries
from pytrim.caffeio.proto import read_net, set_data_sources, write_text
from pytrim.caffeio.upgrade import current_format
from pytrim.core.files import shipped
from pytrim.experiments.overlap import overlap_of
from pytrim.experiments.synthetic import Options, run
from pytrim.feeds.imagenet import HOW_TO_GET, prepare
from pytrim.loop.driver import run_schedule
from pytrim.loop.report import write
from pytrim.loop.schedule import load_schedule

VGG16 = shipped("prototxt/vgg16")
WEIGHTS_URL = "http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/VGG_ILSVRC_16_layers.caffemodel"


@dataclass
class Inputs:
    """What a real run is given: the weights and the ImageNet splits (LMDBs, or JPEG folders
    with labels files)."""

    weights: Path | None
    val: Path | None
    val_labels: Path | None
    train: Path | None = None
    train_labels: Path | None = None


def missing(given: Inputs, retrain: bool) -> list[str]:
    """What a real run lacks, each with where to get it."""
    found = []
    if given.weights is None or not given.weights.is_file():
        found.append(
            f"the published VGG-16 weights{f' (not found: {given.weights})' if given.weights else ''}: --weights / "
            f"VGG16_WEIGHTS=VGG_ILSVRC_16_layers.caffemodel (528 MB, model zoo gist 211839e770f7b538e2d8) from "
            f"{WEIGHTS_URL}"
        )
    for split, source, labels, needed in (("val", given.val, given.val_labels, True),
                                          ("train", given.train, given.train_labels, retrain)):  # fmt: skip
        if not needed:
            continue
        if source is None or not source.exists():
            what = "validation set (APoZ and accuracy)" if split == "val" else "training set (retraining)"
            found.append(
                f"the ImageNet {what}{f' (not found: {source})' if source else ''}: --{split} / "
                f"IMAGENET_{split.upper()}=an LMDB folder, or a folder of JPEGs with --{split}-labels. {HOW_TO_GET}"
            )
        elif not (source / "data.mdb").is_file() and (labels is None or not labels.is_file()):
            found.append(f"labels for the {split} images in {source}: --{split}-labels FILE (lines 'path label')")
    return found


def prepare_data(given: Inputs, out: Path, images: int | None) -> Path:
    """The ImageNet LMDBs under out/data and a train_val prototxt reading them."""
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    prepare("val", given.val, given.val_labels, data, images)
    if given.train is not None:
        prepare("train", given.train, given.train_labels, data, images)
    else:  # no retraining: the TRAIN phase never runs; point it at the validation data
        link = data / "train_lmdb"
        link.unlink(missing_ok=True)
        link.symlink_to((data / "val_lmdb").resolve(), target_is_directory=True)
    # A validation subset smaller than a batch: no image is pushed through twice.
    test = data / "val_lmdb"
    net = set_data_sources(read_net(VGG16 / "train_val.prototxt"), data / "train_lmdb", test, max_batch=entries(test))
    return write_text(net, out / "train_val.prototxt")


def real_run(given: Inputs, out: Path, schedule: Path, overrides: dict[str, Any], images: int | None,
             check_overlap: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Prepare the data, upgrade the weights, run the schedule; the report (top-5 too)."""
    net = prepare_data(given, out, images)
    weights = current_format(given.weights, "weights")
    if check_overlap:
        for name, r in overlap_of(net, weights, out / "data/train_lmdb", check_overlap, images, 1.0, 0).items():
            print(f"{name}: {r['removed_a']} vs {r['removed_b']} removed, {r['common']} in common "
                  f"(Jaccard {r['jaccard']:.2f}), {r['images']} images each")  # fmt: skip
    loaded = load_schedule(schedule, out=str(out), net=str(net), weights=str(weights), **overrides)
    state = run_schedule(loaded)
    return write(state, loaded, "Network Trimming: VGG-16", top5=True)


def synthetic_run(out: Path, images: int, batch: int, iters: int, layers: list[str] | None,
                  repeats: int = 3) -> dict[str, Any]:  # fmt: skip
    """The machinery on the full-size VGG-16 with random weights and generated images."""
    return run(VGG16 / "deploy.prototxt", out, Options(0.25, images, batch, iters, layers=layers, repeats=repeats))
