"""TEST data split into shards (LMDB record ranges) for several workers, merged exactly.

A worker cannot start Caffe's Data layer in the middle of a database, so it runs an Input
version of the net and feeds its records itself through Caffe's TEST transform
(pytrim.feeds: the same float32 inputs, bit for bit). Shards are whole batches of the net's
TEST batch size, so every batch holds the same images as in a single process, and float
statistics are kept as per-batch sums added in batch order (`OrderedSum`): merged shards
give exactly the single-process numbers, not just close ones.

A shard job carries the function of its pass (a module-level function of the statistics
layer, `pass(net, source, options) -> mergeable dict`): sharding knows nothing of what is
counted.
"""

from __future__ import annotations

import functools
import itertools
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.env import caffe_pb2, load_caffe
from pytrim.caffeio.netcheck import check_model
from pytrim.caffeio.proto import input_net, layers_in_phase, read_net
from pytrim.core.errors import BadInput
from pytrim.core.files import sha256_file
from pytrim.feeds.image import Transform
from pytrim.feeds.source import DataSource, Feeder, Records


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


def lmdb_data_layer(net: Any) -> Any:
    for layer in layers_in_phase(net, "TEST"):
        if layer.type == "Data":
            return layer
    raise BadInput("sharding needs a TEST-phase Data layer (an LMDB) to split")


Pass = Callable[[Any, DataSource, dict[str, Any]], dict[str, Any]]


@dataclass
class ShardJob:
    """One worker's part of a pass: everything it needs travels with it (the net's text; the
    paths of the weights and the LMDB, which every node must read at the same path)."""

    run: Pass  # the pass: a module-level function (it travels by reference)
    prototxt: str  # the Input version of the net, as text
    weights: str
    weights_sha256: str  # the driver's weights: a node with another file at the path fails
    source: DataSource
    options: dict[str, Any] = field(default_factory=dict)  # what the pass reads

    @property
    def label(self) -> str:
        positions = self.source.feeder.positions if self.source.feeder else [0]
        return f"the shard of records {positions[0]}-{positions[-1] + 1}"


def check_shard_files(job: ShardJob) -> None:
    """The weights and the LMDB as the driver saw them, or one line naming the path."""
    weights, source = Path(job.weights), job.source.source
    if not weights.is_file():
        raise BadInput(f"the weights {weights} cannot be read here (every node needs them at the same path)")
    if sha256_file(weights) != job.weights_sha256:
        raise BadInput(f"the weights {weights} here differ from the driver's (sha256)")
    if not (source / "data.mdb").is_file():
        raise BadInput(f"the LMDB {source} cannot be read here (every node needs it at the same path)")


def build_net(job: ShardJob) -> Any:
    """The job's Input net with its weights (checked by the driver)."""
    caffe = load_caffe()
    with tempfile.TemporaryDirectory(prefix="pytrim-shard-") as tmp:
        path = Path(tmp) / "shard.prototxt"
        path.write_text(job.prototxt)
        net = caffe.Net(str(path), caffe.TEST)
    net.copy_from(job.weights)
    return net


def run_shard(job: ShardJob) -> dict[str, Any]:
    """A shard's mergeable counts and sums, in whatever process runs it."""
    check_shard_files(job)
    return job.run(build_net(job), job.source, job.options)


def shard_jobs(run: Pass, run_path: Path, weights: Path, data: DataSource, options: dict[str, Any]) -> Any:
    """A function of the worker slots giving the jobs of a pass over `data` (an LMDB Data
    layer's records) with the net at `run_path`."""
    if data.feeder is not None:
        raise BadInput("--workers/--ray-address split an LMDB Data layer's records: not a --feed")
    shapes = check_model(run_path, weights).blobs
    run_param = read_net(run_path)
    layer = lmdb_data_layer(run_param)
    if layer.data_param.backend != caffe_pb2().DataParameter.LMDB:
        raise BadInput(f"Data layer {layer.name!r} reads a LevelDB: sharding splits LMDB records")
    text, transform, digest = str(input_net(run_param, shapes)), Transform.of_layer(layer), sha256_file(weights)
    records = Records(Path(data.source))

    def jobs(slots: int) -> list[ShardJob]:
        out = []
        for start, end in shard_ranges(data.total, data.batch, slots):
            feeder = Feeder(records, list(range(start, end)), transform)
            source = DataSource(data.layer, data.data_blob, data.label_blob, data.source, data.batch, end - start,
                                feeder, start // data.batch)  # fmt: skip
            out.append(ShardJob(run, text, str(weights), digest, source, options))
        return out

    return jobs


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Shards' results added up in shard order: integers and integer arrays summed, per-batch
    float sums (OrderedSum) merged, per-image arrays (1-d float arrays under keys ending in
    "_per_image") joined in order; `positions` and `classes` are the same in every shard."""
    out = dict(results[0])
    for key, value in results[0].items():
        if key in ("positions", "classes"):
            continue
        if key.endswith("_per_image"):
            out[key] = np.concatenate([r[key] for r in results])
        elif isinstance(value, dict):
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
