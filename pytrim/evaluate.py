"""Top-1 / top-5 accuracy of a net on the data of its own TEST-phase Data layer.

Caffe's Data layer wraps around at the end of its database, so a plain `caffe test` with
`test_iter * batch` larger than the data counts some images twice. Here every image of the
LMDB is scored exactly once: the last batch counts only its first images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffe_env import caffe_pb2, load_caffe
from pytrim.datasets import lmdb_entries
from pytrim.protoutil import read_net


@dataclass
class Accuracy:
    """Accuracy over `images` images; top5 is None when the net has fewer than 5 classes."""

    top1: float
    top5: float | None
    images: int


def find_test_data(net: Any) -> tuple[Any, str, str]:
    """The TEST-phase Data layer of a NetParameter, its data top and its label top."""
    pb2 = caffe_pb2()
    for layer in net.layer:
        if layer.type != "Data":
            continue
        phases = [rule.phase for rule in layer.include]
        if phases and pb2.TEST not in phases:
            continue
        if len(layer.top) < 2:
            raise ValueError(f"Data layer {layer.name!r} has no label top")
        return layer, layer.top[0], layer.top[1]
    raise ValueError("the net has no TEST-phase Data layer to evaluate on")


def find_scores(net: Any, label: str) -> str:
    """The blob of class scores: the first bottom of the layer that compares it with `label`."""
    for layer in net.layer:
        if layer.type in ("Accuracy", "SoftmaxWithLoss") and len(layer.bottom) >= 2:
            if layer.bottom[1] == label:
                return layer.bottom[0]
    raise ValueError(f"no Accuracy or SoftmaxWithLoss layer takes the label blob {label!r}")


def topk_hits(scores: np.ndarray, labels: np.ndarray, k: int) -> int:
    """How many rows of `scores` have their label among their k highest scores."""
    scores = scores.reshape(scores.shape[0], -1)
    labels = labels.reshape(-1).astype(np.int64)
    if k == 1:
        return int(np.sum(scores.argmax(axis=1) == labels))
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return int(np.sum(np.any(top == labels[:, None], axis=1)))


def evaluate(
    net_path: str | Path,
    weights: str | Path,
    limit: int | None = None,
    progress: bool = True,
) -> Accuracy:
    """Score every image of the net's TEST data once (or the first `limit`)."""
    from tqdm import tqdm

    caffe = load_caffe()
    net_param = read_net(net_path)
    data_layer, _, label = find_test_data(net_param)
    scores_blob = find_scores(net_param, label)
    total = lmdb_entries(data_layer.data_param.source)
    if limit is not None:
        total = min(total, limit)
    batch = data_layer.data_param.batch_size
    net = caffe.Net(str(net_path), str(weights), caffe.TEST)
    hits1 = hits5 = seen = 0
    classes = None
    with tqdm(total=total, desc="evaluate", unit="img", disable=not progress, leave=False) as bar:
        for _ in range(math.ceil(total / batch)):
            net.forward()
            take = min(batch, total - seen)
            scores = net.blobs[scores_blob].data[:take]
            labels = net.blobs[label].data[:take]
            classes = scores.reshape(take, -1).shape[1]
            hits1 += topk_hits(scores, labels, 1)
            if classes >= 5:
                hits5 += topk_hits(scores, labels, 5)
            seen += take
            bar.update(take)
    top5 = hits5 / seen if classes and classes >= 5 else None
    return Accuracy(top1=hits1 / seen, top5=top5, images=seen)
