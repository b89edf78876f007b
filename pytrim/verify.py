"""Prove a cut: the trimmed net equals the original with the removed channels silenced where
they enter their consumers.

Zeroing a producer's rows does not silence a channel once BatchNorm, Scale, a bias or a
Sigmoid lies between it and its consumers (they turn a zero into a constant). So the
original net gets, in every layer that consumes a cut group, the weights that read removed
channels set to zero (a grouped convolution: within the channel's block), which holds
whatever lies between. Both nets then run on the same inputs (the same TEST data from the
start, or the same seeded random input for a deploy net), and every blob of the trimmed net
must equal the matching blob of the original (its kept channels where the blob carries cut
groups) within `tol` relative to the blob's scale. A cut through a layer that mixes channels
(LRN across channels, allowed with --allow-inexact) cannot be exact: its deviation is
measured and reported instead of failing the check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffemodel import Caffemodel
from pytrim.choose import Selection
from pytrim.cut import folded_biases, group_of, positions, selection_of
from pytrim.data import Feed, data_source
from pytrim.graph import Graph, Layout, Use, build_graph, elements
from pytrim.netcheck import NetShapes, load_net, probe
from pytrim.protoutil import layers_in_phase, read_net, write_text


@dataclass
class BlobCheck:
    blob: str
    max_abs_diff: float
    scale: float

    @property
    def relative(self) -> float:
        return self.max_abs_diff / max(self.scale, 1e-12)


@dataclass
class VerifyResult:
    """Per-blob differences; `ok` when every relative difference is within `tol` (or the cut
    is inexact by permission, `inexact` saying why)."""

    ok: bool
    tol: float
    checks: list[BlobCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    inexact: list[str] = field(default_factory=list)

    @property
    def max_relative(self) -> float:
        return max((c.relative for c in self.checks), default=0.0)

    @property
    def max_abs_diff(self) -> float:
        return max((c.max_abs_diff for c in self.checks), default=0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "exact": self.max_relative <= self.tol and not self.problems,
            "tol": self.tol,
            "max_relative_diff": self.max_relative,
            "max_abs_diff": self.max_abs_diff,
            "problems": self.problems,
            "inexact": self.inexact,
            "blobs": {c.blob: {"max_abs_diff": c.max_abs_diff, "scale": c.scale} for c in self.checks},
        }


def silence(net: Any, graph: Graph, use: Use, keep: np.ndarray) -> None:
    """Zero the weights of a consumer that read the channels not in `keep`."""
    weights = net.params[use.layer][0].data
    _, axis = use.params[0]
    width = use.layout.width
    removed = np.setdiff1d(np.arange(width), keep)
    if use.groups > 1:
        per_in, per_out = width // use.groups, weights.shape[0] // use.groups
        for channel in removed:
            block, local = divmod(int(channel), per_in)
            weights[block * per_out : (block + 1) * per_out, local] = 0
        return
    index = [slice(None)] * weights.ndim
    index[axis] = elements(removed, use.layout.spatial)
    weights[tuple(index)] = 0


def with_biases(net_path: Path, weights: Path, biases: dict[str, np.ndarray], tmp: Path) -> Any:
    """The original net with the folded means added to its consumers' biases (a consumer
    without a bias gets one, as the trimmed net does)."""
    param = read_net(net_path)
    for layer in param.layer:
        if layer.name in biases:
            (layer.inner_product_param if layer.type == "InnerProduct" else layer.convolution_param).bias_term = True
    net = load_net(write_text(param, tmp / "biased.prototxt"), None)
    with Caffemodel(weights) as model:
        for name, blobs in net.params.items():
            for blob, array in zip(blobs, model.arrays(name), strict=False):
                blob.data[...] = array.reshape(blob.data.shape)
            if name in biases:
                had_bias = len(model.layers[name].blobs) > 1
                blobs[1].data[...] = (blobs[1].data if had_bias else 0) + biases[name]
    return net


def masked_original(
    net_path: Path, weights: Path, graph: Graph, kept: dict[int, np.ndarray], biases: dict[str, np.ndarray]
) -> Any:
    """The original net with every removed channel silenced at its consumers (and, with
    --fold-mean, its mean folded into their biases, as the trimmed net has it)."""
    import tempfile

    if biases:
        with tempfile.TemporaryDirectory(prefix="pytrim-verify-") as tmp:
            net = with_biases(net_path, weights, biases, Path(tmp))
    else:
        net = load_net(net_path, weights)
    for use in graph.uses:
        if use.kind == "consumer":
            keep = positions(graph, use.layout, kept)
            if keep is not None:
                silence(net, graph, use, keep)
    return net


def feed_random_inputs(nets: list[Any], net_param: Any, rng: np.random.Generator) -> None:
    """The same seeded random values into the Input layers of both nets."""
    for layer in layers_in_phase(net_param, "TEST"):
        if layer.type == "Input":
            for top in layer.top:
                data = rng.random(nets[0].blobs[top].data.shape, dtype=np.float32)
                for net in nets:
                    net.blobs[top].data[...] = data


def split_source(blob: str, known: dict[str, Any]) -> str | None:
    """The blob an implicit Split copies: Caffe names the copies <blob>_<layer>_<i>_split_<j>."""
    if "_split_" not in blob:
        return None
    candidates = [name for name in known if blob.startswith(name + "_")]
    return max(candidates, key=len) if candidates else None


def compare_blobs(masked: Any, trimmed: Any, layouts: dict[str, tuple[Layout, np.ndarray | None]]) -> tuple:
    """Per blob (max |difference|, scale) over the kept channels; and the shape problems."""
    checks, problems = {}, []
    for blob, got in trimmed.blobs.items():
        if blob not in masked.blobs:
            problems.append(f"blob {blob!r} exists only in the trimmed net")
            continue
        want = masked.blobs[blob].data
        layout, keep = layouts.get(blob) or layouts.get(split_source(blob, layouts) or "", (None, None))
        if keep is not None and layout is not None and want.ndim >= 2:
            want = np.take(want, elements(keep, layout.spatial), axis=1)
        if want.shape != got.data.shape:
            problems.append(f"blob {blob!r}: shape {got.data.shape}, expected {want.shape}")
            continue
        diff = float(np.abs(got.data - want).max()) if want.size else 0.0
        checks[blob] = BlobCheck(blob, diff, float(np.abs(want).max()) if want.size else 0.0)
    return checks, problems


def fold_biases_of(
    shapes: NetShapes, weights: str | Path, graph: Graph, kept: dict[int, np.ndarray], fold: dict | None
) -> dict[str, np.ndarray]:
    if not fold:
        return {}
    with Caffemodel(weights) as model:
        return folded_biases(graph, kept, model, shapes, fold)


def verify(
    net_path: str | Path,
    weights: str | Path,
    trimmed_net_path: str | Path,
    trimmed_weights: str | Path,
    selections: dict[str, Selection],
    tol: float = 1e-5,
    batches: int = 1,
    seed: int = 0,
    allow_inexact: bool = False,
    feed: Feed | None = None,
    fold: dict[str, np.ndarray] | None = None,
) -> VerifyResult:
    """Compare the silenced original with the trimmed net over `batches` forward passes (a
    deploy net gets seeded random input, or the images of `feed`)."""
    net_param, shapes = read_net(net_path), probe(net_path)
    graph = build_graph(net_param, shapes.blobs, allow_inexact=allow_inexact)
    kept = selection_of(graph, selections)
    inexact = sorted({reason for name in selections for reason in group_of(graph, name).inexact})
    layouts = {blob: (layout, positions(graph, layout, kept)) for blob, layout in graph.layouts.items()}
    masked = masked_original(
        Path(net_path), Path(weights), graph, kept, fold_biases_of(shapes, weights, graph, kept, fold)
    )
    trimmed = load_net(trimmed_net_path, trimmed_weights)
    rng = np.random.default_rng(seed)
    result = VerifyResult(ok=True, tol=tol, inexact=inexact)
    worst: dict[str, BlobCheck] = {}
    data = data_source(net_param, None, feed) if feed is not None else None
    for index in range(max(1, batches)):
        if data is not None:
            data.feed(masked, index % math.ceil(data.total / data.batch))
            data.feed(trimmed, index % math.ceil(data.total / data.batch))
        else:
            feed_random_inputs([masked, trimmed], net_param, rng)
        masked.forward()
        trimmed.forward()
        checks, problems = compare_blobs(masked, trimmed, layouts)
        result.problems += problems
        for blob, check in checks.items():
            if blob not in worst or check.relative > worst[blob].relative:
                worst[blob] = check
    result.checks = list(worst.values())
    result.problems = list(dict.fromkeys(result.problems))
    result.ok = not result.problems and (bool(inexact) or all(c.relative <= tol for c in result.checks))
    return result
