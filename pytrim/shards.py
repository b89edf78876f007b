"""TEST data split into shards (LMDB record ranges) for several workers, merged exactly.

A worker cannot start Caffe's Data layer in the middle of a database, so it runs an Input
version of the net and feeds its records itself, transformed exactly as Caffe's
DataTransformer does in the TEST phase (centre crop, mean value or mean file, scale; all in
float32, so the inputs are bit-identical). Shards are whole batches of the net's TEST batch
size, so every batch holds the same images as in a single process, and float statistics are
kept as per-batch sums added in batch order (`OrderedSum`): merged shards give exactly the
single-process numbers, not just close ones.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffe_env import caffe_pb2
from pytrim.datasets import read_datum
from pytrim.errors import BadInput
from pytrim.protoutil import layers_in_phase, read_net


class OrderedSum:
    """A sum of float64 per-batch terms that gives the same bits however the batches were
    split among workers: terms are numbered by their batch's place in the whole pass, every
    run of CHUNK consecutive batches is added up in order (then kept as one array), and the
    chunks' totals are added in order. A chunk split between two shards keeps its terms
    until the shards are merged. Memory: one array per chunk."""

    CHUNK = 64

    def __init__(self, first: int = 0) -> None:
        self.next = first  # the batch number of the next term
        self.done: dict[int, np.ndarray] = {}  # chunk -> its total
        self.open: dict[int, dict[int, np.ndarray]] = {}  # chunk -> {batch number: term}

    def add(self, term: np.ndarray) -> None:
        self.put(self.next, np.asarray(term, dtype=np.float64))
        self.next += 1

    def put(self, number: int, term: np.ndarray) -> None:
        chunk = number // self.CHUNK
        terms = self.open.setdefault(chunk, {})
        terms[number] = term
        if len(terms) == self.CHUNK:
            self.done[chunk] = functools.reduce(np.add, (terms[n] for n in sorted(terms)))
            del self.open[chunk]

    def extend(self, other: OrderedSum) -> None:
        """Take in another shard's terms (shards never overlap)."""
        self.done.update(other.done)
        for terms in other.open.values():
            for number, term in terms.items():
                self.put(number, term)

    def total(self) -> np.ndarray | float:
        chunks = {k: [t[n] for n in sorted(t)] for k, t in self.open.items()}
        chunks.update({k: [v] for k, v in self.done.items()})
        totals = [functools.reduce(np.add, chunks[k]) for k in sorted(chunks)]
        return functools.reduce(np.add, totals) if totals else 0.0


def shard_ranges(total: int, batch: int, shards: int) -> list[tuple[int, int]]:
    """[start, end) record ranges of whole batches (the last may end with a partial one)."""
    batches = math.ceil(total / batch)
    shards = max(1, min(shards, batches))
    bounds = [round(i * batches / shards) * batch for i in range(shards + 1)]
    return [(start, min(end, total)) for start, end in itertools.pairwise(bounds) if start < total]


@dataclass
class Transformer:
    """Caffe's DataTransformer for the TEST phase (no random crop, no mirror)."""

    scale: float = 1.0
    mean_values: tuple[float, ...] = ()
    mean: np.ndarray | None = None  # a mean file's (C, H, W)
    crop: int = 0

    @classmethod
    def of(cls, layer: Any) -> Transformer:
        t = layer.transform_param
        if t.mirror:
            raise BadInput(f"Data layer {layer.name!r} mirrors at random: its shards would not be reproducible")
        mean = None
        if t.mean_file:
            blob = caffe_pb2().BlobProto()
            blob.ParseFromString(Path(t.mean_file).read_bytes())
            mean = np.asarray(blob.data, np.float32).reshape(blob.channels, blob.height, blob.width)
        return cls(float(t.scale) if t.HasField("scale") else 1.0, tuple(t.mean_value), mean, int(t.crop_size))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(..., C, H, W) uint8 or float32 -> the float32 inputs, as Caffe computes them (the
        same operations in the same order, element by element)."""
        channels, height, width = images.shape[-3:]
        top, left, out_h, out_w = 0, 0, height, width
        if self.crop:
            top, left, out_h, out_w = (height - self.crop) // 2, (width - self.crop) // 2, self.crop, self.crop
        x = images[..., top : top + out_h, left : left + out_w].astype(np.float32)
        if self.mean is not None:
            x = x - self.mean[:, top : top + out_h, left : left + out_w]
        elif self.mean_values:
            values = self.mean_values * channels if len(self.mean_values) == 1 else self.mean_values
            x = x - np.asarray(values, np.float32).reshape(-1, 1, 1)
        return x * np.float32(self.scale)


def test_data_layer(net: Any) -> Any:
    for layer in layers_in_phase(net, "TEST"):
        if layer.type == "Data":
            return layer
    raise BadInput("sharding needs a TEST-phase Data layer (an LMDB) to split")


def input_net(net: Any, shape: tuple[int, ...]) -> Any:
    """The TEST phase of `net` with its Data layer replaced by an Input of the same tops
    (data of `shape`, and the label)."""
    pb2 = caffe_pb2()
    layer = test_data_layer(net)
    out = pb2.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    for original in layers_in_phase(net, "TEST"):
        if original is not layer:
            out.layer.add().CopyFrom(original)
            continue
        replacement = out.layer.add(name=layer.name, type="Input", top=list(layer.top))
        replacement.input_param.shape.add(dim=list(shape))
        if len(layer.top) > 1:
            replacement.input_param.shape.add(dim=[shape[0]])
    return out


@dataclass
class RangeSource:
    """LMDB records [start, end), fed batch by batch into an Input version of the net (the
    interface of pytrim.data.DataSource)."""

    source: Path
    start: int
    end: int
    batch: int
    transform: Transformer
    data_blob: str
    label_blob: str | None
    labels: list[int] = field(default_factory=list)
    reader: Any = True  # fed by pytrim (evaluate reads `labels`)

    @property
    def total(self) -> int:
        return self.end - self.start

    def range_keys(self) -> list[bytes]:
        """The keys of the range (LMDB has no positional access: keys are walked once)."""
        if not hasattr(self, "_keys"):
            import lmdb

            with lmdb.open(str(self.source), readonly=True, lock=False) as env, env.begin() as txn:
                keys = txn.cursor().iternext(keys=True, values=False)
                self._keys = [key for i, key in enumerate(keys) if self.start <= i < self.end]
        return self._keys

    def feed(self, net: Any, index: int) -> None:
        import lmdb

        keys = self.range_keys()[index * self.batch : (index + 1) * self.batch]
        with lmdb.open(str(self.source), readonly=True, lock=False) as env, env.begin() as txn:
            values = [txn.get(key) for key in keys]
        blob = net.blobs[self.data_blob].data
        blob[...] = 0
        records = [read_datum(value) for value in values]
        self.labels = [label for _, label in records]
        if len({image.shape for image, _ in records}) == 1:  # one numpy operation for the batch
            blob[: len(records)] = self.transform(np.stack([image for image, _ in records]))
        else:
            for slot, (image, _) in enumerate(records):
                blob[slot] = self.transform(image)
        if self.label_blob is not None:
            net.blobs[self.label_blob].data[: len(self.labels)] = self.labels


@dataclass
class ShardJob:
    """One worker's part of a pass: everything it needs travels with it (the net's text; the
    paths of the weights and the LMDB, which every node must read at the same path)."""

    kind: str  # a key of PASSES
    prototxt: str  # the Input version of the net, as text
    weights: str
    weights_sha256: str  # the driver's weights: a node with another file at the path fails
    records: RangeSource
    options: dict[str, Any] = field(default_factory=dict)  # what the pass reads

    @property
    def label(self) -> str:
        return f"the shard of records {self.records.start}-{self.records.end}"


# kind -> (module, function(net, source, options, first_batch) -> mergeable result)
PASSES = {
    "collect": ("pytrim.collect", "apoz_pass"),
    "criteria": ("pytrim.collect", "criteria_pass"),
    "evaluate": ("pytrim.evaluate", "hits_pass"),
}


def check_shard_files(job: ShardJob) -> None:
    """The weights and the LMDB as the driver saw them, or one line naming the path."""
    from pytrim.files import sha256_file

    weights, source = Path(job.weights), job.records.source
    if not weights.is_file():
        raise BadInput(f"the weights {weights} cannot be read here (every node needs them at the same path)")
    if sha256_file(weights) != job.weights_sha256:
        raise BadInput(f"the weights {weights} here differ from the driver's (sha256)")
    if not (source / "data.mdb").is_file():
        raise BadInput(f"the LMDB {source} cannot be read here (every node needs it at the same path)")


def build_net(job: ShardJob) -> Any:
    """The job's Input net with its weights (checked by the driver)."""
    import tempfile

    from pytrim.caffe_env import load_caffe

    caffe = load_caffe()
    with tempfile.TemporaryDirectory(prefix="pytrim-shard-") as tmp:
        path = Path(tmp) / "shard.prototxt"
        path.write_text(job.prototxt)
        net = caffe.Net(str(path), caffe.TEST)
    net.copy_from(job.weights)
    return net


def run_shard(job: ShardJob) -> dict[str, Any]:
    """A shard's mergeable counts and sums, in whatever process runs it."""
    import importlib

    check_shard_files(job)
    net = build_net(job)
    records = job.records
    module, name = PASSES[job.kind]
    return getattr(importlib.import_module(module), name)(net, records, job.options, records.start // records.batch)


def shard_jobs(kind: str, run_path: Path, weights: Path, data: Any, options: dict[str, Any]) -> Any:
    """A function of the worker slots giving the jobs of a pass over `data` (an LMDB Data
    layer's records) with the net at `run_path`."""
    from pytrim.files import sha256_file
    from pytrim.netcheck import check_model

    if data.reader is not None:
        raise BadInput("--workers/--ray-address split an LMDB Data layer's records: not a --data feed")
    shape = tuple(check_model(run_path, weights).blobs[data.data_blob])
    run_param = read_net(run_path)
    layer = test_data_layer(run_param)
    if layer.data_param.backend != caffe_pb2().DataParameter.LMDB:
        raise BadInput(f"Data layer {layer.name!r} reads a LevelDB: sharding splits LMDB records")
    text, transform, digest = str(input_net(run_param, shape)), Transformer.of(layer), sha256_file(weights)

    def jobs(slots: int) -> list[ShardJob]:
        ranges = shard_ranges(data.total, data.batch, slots)
        feed = (data.batch, transform, data.data_blob, data.label_blob)
        shards = [RangeSource(Path(data.source), a, b, *feed) for a, b in ranges]
        return [ShardJob(kind, text, str(weights), digest, records, options) for records in shards]

    return jobs


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Shards' results added up in shard order: integers and integer arrays summed, per-batch
    float sums (OrderedSum) merged; `positions` and `classes` are the same in every shard."""
    out = dict(results[0])
    for key, value in results[0].items():
        if key in ("positions", "classes"):
            continue
        if isinstance(value, dict):
            out[key] = {name: combine([r[key][name] for r in results]) for name in value}
        else:
            out[key] = sum(r[key] for r in results)
    return out


def combine(parts: list[Any]) -> Any:
    if not isinstance(parts[0], OrderedSum):
        return sum(parts[1:], parts[0])
    total = OrderedSum()
    for part in parts:
        total.extend(part)
    return total
