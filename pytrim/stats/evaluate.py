"""How well a net does on its TEST data, every image counted exactly once: top-1/top-5
accuracy, or any TEST-phase output blob of the net (its `metric`: a loss, a distance), with
per-unit values so that two nets scored on the same images can be compared pairwise.

A unit is an image (top-1: 1 or 0; a blob with one value per image: their mean), or a batch
for a blob with one value per batch (a loss layer averages over its batch; Caffe's data layer
wraps around, so a last partial batch's value covers a whole batch: pick a batch size that
divides the images). The paired difference of two nets is the mean of their per-unit
differences, with the standard error of that mean: for top-1 it comes from the images the two
nets disagree on (McNemar's), usually far smaller than that of two independent proportions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.netcheck import load_net, probe
from pytrim.caffeio.proto import layers_in_phase, read_net, with_test_data
from pytrim.core.errors import BadInput, few
from pytrim.core.files import together
from pytrim.feeds.source import DataSource, Feed, batches, data_source
from pytrim.scale.cluster import run_shards, wanted
from pytrim.scale.shards import merge, shard_jobs

ACCURACY = "accuracy"


@dataclass
class Scores:
    """A measure's value per unit and each unit's number of images."""

    values: np.ndarray
    weights: np.ndarray

    @property
    def mean(self) -> float:
        return float(np.sum(self.values * self.weights) / np.sum(self.weights))

    @property
    def stderr(self) -> float:
        """Standard error of the (image-weighted) mean over the units."""
        n = self.values.size
        if n < 2:
            return math.nan
        spread = np.sum(self.weights * (self.values - self.mean) ** 2) / np.sum(self.weights)
        return float(math.sqrt(spread * n / (n - 1) / n))

    def save(self, path: str | Path) -> Path:
        with together([path]) as (partial,), partial.open("wb") as handle:
            np.savez(handle, values=self.values, weights=self.weights)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Scores:
        with np.load(path) as stored:
            return cls(stored["values"], stored["weights"])


def paired(base: Scores, other: Scores) -> tuple[float, float]:
    """Mean and standard error of other - base over the same units (the same images)."""
    if base.values.shape != other.values.shape or not np.array_equal(base.weights, other.weights):
        raise BadInput("paired scores must come from the same images in the same order")
    difference = Scores(other.values - base.values, base.weights)
    return difference.mean, difference.stderr


@dataclass
class Evaluation:
    """Top-1/top-5 over `images` images (None without class scores; top-5 None with fewer
    than 5 classes) and the measure decisions read (`metric`: top-1, or a blob's values)."""

    top1: float | None
    top5: float | None
    images: int
    metric: str
    scores: Scores
    lower_is_better: bool = False

    @property
    def top1_stderr(self) -> float | None:
        """Standard error of top-1 as a binomial proportion over the images."""
        return None if self.top1 is None else math.sqrt(self.top1 * (1 - self.top1) / self.images)

    def to_json(self) -> dict[str, Any]:
        return {"top1": self.top1, "top5": self.top5, "images": self.images, "top1_stderr": self.top1_stderr,
                "metric": self.metric, "value": self.scores.mean, "stderr": self.scores.stderr,
                "lower_is_better": self.lower_is_better}  # fmt: skip


def find_scores(net: Any, label: str | None) -> str | None:
    """The blob of class scores: the first bottom of the layer that compares it with `label`."""
    for layer in layers_in_phase(net, "TEST"):
        if layer.type in ("Accuracy", "SoftmaxWithLoss") and len(layer.bottom) >= 2 and layer.bottom[1] == label:
            return layer.bottom[0]
    return None


def topk_hits(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per row of `scores`: whether its label is among its k highest scores."""
    scores = scores.reshape(scores.shape[0], -1)
    labels = labels.reshape(-1).astype(np.int64)
    if k == 1:
        return scores.argmax(axis=1) == labels
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return np.any(top == labels[:, None], axis=1)


def output_blob(net: Any) -> str:
    """A deploy net's class scores: its first output with more than one value per image."""
    for name in net.outputs:
        if net.blobs[name].data[0].size > 1:
            return name
    raise BadInput("the net has no output with class scores")


def blob_units(blob: np.ndarray, take: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """A blob's values as units: one per image when it has one row per image, else one for the batch."""
    if blob.ndim >= 1 and blob.shape[0] == batch and batch > 1:
        return blob[:take].reshape(take, -1).mean(axis=1), np.ones(take)
    return np.array([float(np.mean(blob))]), np.array([float(take)])


def hits_pass(net: Any, data: DataSource, options: dict[str, Any]) -> dict[str, Any]:
    """Top-1/top-5 hits of options["scores"] (if any) over `data`, each image's top-1, and the
    units of options["metric"] (a blob, if any); labels from the net's label blob, or from
    the feed for a deploy net."""
    hits5 = seen = classes = 0
    correct, values, weights = [], [], []
    for take in batches(net, data, "evaluate", options.get("progress", False)):
        if options.get("scores"):
            scores = net.blobs[options["scores"]].data[:take]
            labels = net.blobs[data.label_blob].data[:take] if data.feeder is None else np.asarray(data.labels)
            classes = scores.reshape(take, -1).shape[1]
            correct.append(topk_hits(scores, labels, 1).astype(np.float64))
            hits5 += int(topk_hits(scores, labels, 5).sum()) if classes >= 5 else 0
        if options.get("metric"):
            unit, weight = blob_units(net.blobs[options["metric"]].data, take, data.batch)
            values.append(unit)
            weights.append(weight)
        seen += take
    joined = {"correct_per_image": np.concatenate(correct) if correct else np.zeros(0)}
    if values:
        joined |= {"metric_per_image": np.concatenate(values), "weight_per_image": np.concatenate(weights)}
    return {"hits5": hits5, "images": seen, "classes": classes, **joined}


def test_outputs(net_param: Any) -> list[str]:
    """The blobs the TEST net leaves unread (its outputs, as Caffe counts them: an in-place
    layer reads and writes its blob)."""
    available = dict.fromkeys(net_param.input)
    for layer in layers_in_phase(net_param, "TEST"):
        for bottom in layer.bottom:
            available.pop(bottom, None)
        available |= dict.fromkeys(layer.top)
    return list(available)


def _one_per_unit(shape: list[int], batch: int | None) -> bool:
    """One value per batch (a loss, Accuracy), or one per image (a row per image)."""
    count = int(np.prod(shape)) if shape else 1
    return count == 1 or (len(shape) >= 1 and count == shape[0] and (batch is None or shape[0] == batch))


def check_metric(net_param: Any, metric: str, scores: str | None, shapes: dict[str, Any] | None = None) -> None:
    """`metric` is accuracy (the net has class scores and labels) or an output of the TEST net
    with one value per image or per batch (`shapes`: blob -> shape, as Caffe builds the net)."""
    if metric == ACCURACY:
        if scores is None:
            raise BadInput("the net has no Accuracy or SoftmaxWithLoss layer with labels: name the TEST output "
                           "blob to decide on with --metric (schedule: metric)")  # fmt: skip
        return
    outputs = test_outputs(net_param)
    if shapes is not None:
        batch = next((int(s[0]) for s in shapes.values() if s), None)
        outputs = [name for name in outputs if name in shapes and _one_per_unit(list(shapes[name]), batch)]
    if metric not in outputs:
        tops = {top for layer in layers_in_phase(net_param, "TEST") for top in layer.top}
        why = "an output of the TEST net with one value per image or per batch"
        what = "not a blob of the TEST net" if metric not in tops else f"not {why}"
        qualify = f"the blobs that qualify: {few(outputs)}" if outputs else "no blob of this net qualifies"
        raise BadInput(f"--metric {metric!r} is {what} ({qualify})")


def net_shapes(net: Any) -> dict[str, list[int]]:
    """A built pycaffe Net's blob shapes."""
    return {name: list(blob.shape) for name, blob in net.blobs.items()}


def evaluation_of(hits: dict[str, Any], metric: str, lower_is_better: bool) -> Evaluation:
    """The Evaluation of a pass's (merged) results."""
    seen, correct = hits["images"], hits["correct_per_image"]
    top1 = float(correct.mean()) if correct.size else None
    top5 = hits["hits5"] / seen if correct.size and hits["classes"] >= 5 else None
    if metric == ACCURACY:
        scores = Scores(correct, np.ones(correct.size))
    else:
        scores = Scores(hits["metric_per_image"], hits["weight_per_image"])
    return Evaluation(top1, top5, seen, metric, scores, lower_is_better)


def options_of(net_param: Any, data: DataSource, metric: str, net: Any = None) -> dict[str, Any]:
    """What a pass reads: the class scores (if the net has them) and the metric blob."""
    scores = find_scores(net_param, data.label_blob) if data.feeder is None else output_blob(net) if net else None
    check_metric(net_param, metric, scores, net_shapes(net) if net is not None else None)
    return {"scores": scores, "metric": None if metric == ACCURACY else metric}


def score_net(net: Any, net_param: Any, data: DataSource | None = None, progress: bool = False,
              metric: str = ACCURACY, lower_is_better: bool = False) -> Evaluation:  # fmt: skip
    """The Evaluation of a built net over its TEST data (or `data`), in this process: the one
    evaluation path (evaluate, the validation checks of masked retraining)."""
    data = data or data_source(net_param)
    if data.feeder is None and data.label_blob is None and metric == ACCURACY:
        raise BadInput(f"the TEST data layer {data.layer!r} has no label top")
    options = options_of(net_param, data, metric, net) | {"progress": progress}
    return evaluation_of(hits_pass(net, data, options), metric, lower_is_better)


def evaluate(
    net_path: str | Path,
    weights: str | Path,
    images: int | None = None,
    progress: bool = True,
    feed: Feed | None = None,
    workers: int | None = None,
    address: str | None = None,
    metric: str = ACCURACY,
    lower_is_better: bool = False,
) -> Evaluation:
    """Score every image of the net's TEST data once (or the first `images`); a deploy net's
    images and labels come from `feed`. `workers`/`address` split the images among Ray
    workers (the per-image values join in order)."""
    net_param = read_net(net_path)
    data = data_source(net_param, images, feed)
    if not wanted(workers, address):
        return score_net(load_net(net_path, weights), net_param, data, progress, metric, lower_is_better)
    if data.feeder is not None:
        raise BadInput("--workers/--ray-address split an LMDB Data layer's records: not a --feed")
    check_metric(net_param, metric, find_scores(net_param, data.label_blob), probe(net_path).blobs)
    jobs = shard_jobs(hits_pass, Path(net_path), Path(weights), data, options_of(net_param, data, metric))
    return evaluation_of(merge(run_shards(jobs, workers, address, "evaluate")), metric, lower_is_better)


def top1_on(net: str | Path, weights: str | Path, source: str | Path, prototxt: str | Path) -> float:
    """Top-1 of `weights` with the net's TEST data re-pointed to the LMDB `source` (that copy
    of the net written to `prototxt`)."""
    return evaluate(with_test_data(net, source, prototxt), weights, progress=False).top1
