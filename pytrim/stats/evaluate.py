"""Top-1 / top-5 accuracy of a net on its TEST data, every image counted exactly once."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.netcheck import load_net
from pytrim.caffeio.proto import layers_in_phase, read_net, with_test_data
from pytrim.core.errors import BadInput
from pytrim.feeds.source import DataSource, Feed, batches, data_source
from pytrim.scale.cluster import run_shards, wanted
from pytrim.scale.shards import merge, shard_jobs


@dataclass
class Accuracy:
    """Accuracy over `images` images; top5 is None when the net has fewer than 5 classes."""

    top1: float
    top5: float | None
    images: int

    @property
    def top1_stderr(self) -> float:
        """Standard error of top-1 as a binomial proportion over the images."""
        return math.sqrt(self.top1 * (1 - self.top1) / self.images) if self.images else math.nan

    def to_json(self) -> dict[str, Any]:
        return {"top1": self.top1, "top5": self.top5, "images": self.images, "top1_stderr": self.top1_stderr}


def find_scores(net: Any, label: str) -> str:
    """The blob of class scores: the first bottom of the layer that compares it with `label`."""
    for layer in layers_in_phase(net, "TEST"):
        if layer.type in ("Accuracy", "SoftmaxWithLoss") and len(layer.bottom) >= 2 and layer.bottom[1] == label:
            return layer.bottom[0]
    raise BadInput(f"no Accuracy or SoftmaxWithLoss layer takes the label blob {label!r}")


def topk_hits(scores: np.ndarray, labels: np.ndarray, k: int) -> int:
    """How many rows of `scores` have their label among their k highest scores."""
    scores = scores.reshape(scores.shape[0], -1)
    labels = labels.reshape(-1).astype(np.int64)
    if k == 1:
        return int(np.sum(scores.argmax(axis=1) == labels))
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return int(np.sum(np.any(top == labels[:, None], axis=1)))


def output_blob(net: Any) -> str:
    """A deploy net's class scores: its first output with more than one value per image."""
    for name in net.outputs:
        if net.blobs[name].data[0].size > 1:
            return name
    raise BadInput("the net has no output with class scores")


def hits_pass(net: Any, data: DataSource, options: dict[str, Any]) -> dict[str, Any]:
    """Top-1/top-5 hits of options["scores"] over `data` (labels from the net's label blob, or
    from the feed for a deploy net)."""
    hits1 = hits5 = seen = classes = 0
    for take in batches(net, data, "evaluate", options.get("progress", False)):
        scores = net.blobs[options["scores"]].data[:take]
        labels = net.blobs[data.label_blob].data[:take] if data.feeder is None else np.asarray(data.labels)
        classes = scores.reshape(take, -1).shape[1]
        hits1 += topk_hits(scores, labels, 1)
        hits5 += topk_hits(scores, labels, 5) if classes >= 5 else 0
        seen += take
    return {"hits1": hits1, "hits5": hits5, "images": seen, "classes": classes}


def score_net(net: Any, net_param: Any, data: DataSource | None = None, progress: bool = False) -> Accuracy:
    """Top-1/top-5 of a built net over its TEST data (or `data`), in this process: the one
    evaluation path (evaluate, the validation checks of masked retraining)."""
    data = data or data_source(net_param)
    if data.feeder is None and data.label_blob is None:
        raise BadInput(f"the TEST data layer {data.layer!r} has no label top")
    scores = find_scores(net_param, data.label_blob) if data.feeder is None else output_blob(net)
    return accuracy_of(hits_pass(net, data, {"scores": scores, "progress": progress}))


def accuracy_of(hits: dict[str, Any]) -> Accuracy:
    seen, top5 = hits["images"], hits["classes"] >= 5
    return Accuracy(top1=hits["hits1"] / seen, top5=hits["hits5"] / seen if top5 else None, images=seen)


def evaluate(
    net_path: str | Path,
    weights: str | Path,
    images: int | None = None,
    progress: bool = True,
    feed: Feed | None = None,
    workers: int | None = None,
    address: str | None = None,
) -> Accuracy:
    """Score every image of the net's TEST data once (or the first `images`); a deploy net's
    images and labels come from `feed`. `workers`/`address` split the images among Ray
    workers (hit counts add up exactly)."""
    net_param = read_net(net_path)
    data = data_source(net_param, images, feed)
    if not wanted(workers, address):
        return score_net(load_net(net_path, weights), net_param, data, progress)
    if data.feeder is not None or data.label_blob is None:
        raise BadInput("--workers/--ray-address split an LMDB Data layer's records (with labels): not a --feed")
    options = {"scores": find_scores(net_param, data.label_blob)}
    jobs = shard_jobs(hits_pass, Path(net_path), Path(weights), data, options)
    return accuracy_of(merge(run_shards(jobs, workers, address, "evaluate")))


def top1_on(net: str | Path, weights: str | Path, source: str | Path, prototxt: str | Path) -> float:
    """Top-1 of `weights` with the net's TEST data re-pointed to the LMDB `source` (that copy
    of the net written to `prototxt`)."""
    return evaluate(with_test_data(net, source, prototxt), weights, progress=False).top1
