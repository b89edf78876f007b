"""Prove a cut: the trimmed caffemodel is the recipe applied to the original weights, and the
trimmed net equals the original with the removed channels silenced where they enter their
consumers.

1. The recipe the selections give (pytrim.surgery.recipe) is replayed on the original
   weights; every blob of the trimmed caffemodel must hold exactly the result (untouched
   layers exactly the original's). A changed weight fails here whatever the tolerance.
2. Zeroing a producer's rows does not silence a channel once BatchNorm, Scale, a bias or a
   Sigmoid lies between it and its consumers (they turn a zero into a constant). So the
   original net gets, in every layer that consumes a cut group, the weights that read removed
   channels set to zero (a grouped convolution: within the channel's block). Both nets run on
   the same inputs (the same TEST data from the start, or the same seeded random input for a
   deploy net), and every blob of the trimmed net must equal the matching blob of the
   original (its kept channels where the blob carries cut groups) within `tol` relative to
   the blob's scale.
3. A cut through a layer that mixes channels (LRN across channels, allowed with
   --allow-inexact) cannot be exact: the blobs downstream of it are held to `inexact_tol`
   instead and reported apart; every other blob keeps `tol`.
4. A check must compare something: where the blobs that carry a cut group are constant (a
   net with zero weights computes nothing), verification fails instead of passing.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.caffemodel import Caffemodel
from pytrim.caffeio.netcheck import NetShapes, load_net, probe
from pytrim.caffeio.proto import layers_in_phase, read_net, write_text
from pytrim.feeds.source import Feed, data_source
from pytrim.graph.build import build_graph
from pytrim.graph.model import Graph, Layout, Use, elements
from pytrim.graph.queries import group_of, positions
from pytrim.surgery.choose import Selection
from pytrim.surgery.cut import folded_biases, new_blobs
from pytrim.surgery.recipe import LayerCut, recipe, recipe_json, selection_of

INEXACT_TOL = 1e-2  # bound on the relative deviation of blobs downstream of an inexact cut


@dataclass
class BlobCheck:
    blob: str
    max_abs_diff: float
    scale: float
    inexact: bool = False  # downstream of a layer that mixes channels

    @property
    def relative(self) -> float:
        return self.max_abs_diff / max(self.scale, 1e-12)


@dataclass
class VerifyResult:
    """Per-blob differences and every problem found; `ok` when there is no problem and every
    blob is within its tolerance (`tol`; `inexact_tol` downstream of an inexact cut)."""

    ok: bool
    tol: float
    inexact_tol: float = INEXACT_TOL
    checks: list[BlobCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    inexact: list[str] = field(default_factory=list)

    def worst(self, inexact: bool) -> float:
        return max((c.relative for c in self.checks if c.inexact == inexact), default=0.0)

    @property
    def max_relative(self) -> float:
        return self.worst(False)

    @property
    def max_abs_diff(self) -> float:
        return max((c.max_abs_diff for c in self.checks), default=0.0)

    def judge(self) -> None:
        exact = all(c.relative <= self.tol for c in self.checks if not c.inexact)
        bounded = all(c.relative <= self.inexact_tol for c in self.checks if c.inexact)
        self.ok = not self.problems and exact and bounded

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "exact": self.ok and not any(c.inexact for c in self.checks),
            "tol": self.tol,
            "max_relative_diff": self.max_relative,
            "inexact_tol": self.inexact_tol,
            "inexact_max_relative_diff": self.worst(True),
            "max_abs_diff": self.max_abs_diff,
            "problems": self.problems,
            "inexact": self.inexact,
            "blobs": {
                c.blob: {"max_abs_diff": c.max_abs_diff, "scale": c.scale, "inexact": c.inexact} for c in self.checks
            },
        }

    def verdict(self) -> str:
        text = f"verify: {'OK' if self.ok else 'FAILED'} (max relative difference {self.max_relative:.3g}, "
        text += f"tolerance {self.tol:g})"
        if self.inexact:
            text += (f"; inexact by permission, deviation {self.worst(True):.3g} (bound {self.inexact_tol:g}): "
                     + "; ".join(self.inexact))  # fmt: skip
        return text

    def failure(self) -> str:
        """The one line saying why verification failed."""
        if self.problems:
            return f"verification failed: {self.problems[0]}"
        worst = max(self.checks, key=lambda c: c.relative / (self.inexact_tol if c.inexact else self.tol))
        bound = self.inexact_tol if worst.inexact else self.tol
        return f"verification failed: blob {worst.blob!r} differs by {worst.relative:.3g} (tolerance {bound:g})"


def silence(net: Any, use: Use, keep: np.ndarray) -> None:
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
    if biases:
        with tempfile.TemporaryDirectory(prefix="pytrim-verify-") as tmp:
            net = with_biases(net_path, weights, biases, Path(tmp))
    else:
        net = load_net(net_path, weights)
    for use in graph.uses:
        if use.kind == "consumer":
            keep = positions(graph, use.layout, kept)
            if keep is not None:
                silence(net, use, keep)
    return net


def replay(weights: Path, trimmed_weights: Path, shapes: NetShapes, cuts: dict[str, LayerCut],
           biases: dict[str, np.ndarray]) -> list[str]:  # fmt: skip
    """The recipe applied to the original weights, against the trimmed caffemodel: the
    layers whose blobs differ (an empty list: the caffemodel is exactly the recipe's)."""
    with Caffemodel(weights) as model, Caffemodel(trimmed_weights) as trimmed:
        expected = new_blobs(model, shapes, {name: _copy(cut) for name, cut in cuts.items()}, biases)
        original = {name: model.arrays(name) for name in model.layers}
        return [
            name for name in trimmed.layers if not same(expected.get(name, original.get(name)), trimmed.arrays(name))
        ]


def same(want: list[np.ndarray] | None, got: list[np.ndarray]) -> bool:
    """The same number of blobs with the same values, bit for bit (shapes may be legacy 4-d)."""
    if want is None or len(want) != len(got):
        return False
    return all(
        a.size == b.size and np.array_equal(a.reshape(-1), b.reshape(-1)) for a, b in zip(want, got, strict=True)
    )


def _copy(cut: LayerCut) -> LayerCut:
    return LayerCut(cut.num_output, cut.group, cut.slice_point, {i: list(ops) for i, ops in cut.blobs.items()})


def inexact_blobs(net_param: Any, graph: Graph, kept: dict[int, np.ndarray]) -> set[str]:
    """Blobs downstream of a layer that mixes the channels of a cut group (LRN across channels)."""
    tainted: set[str] = set()
    for layer in layers_in_phase(net_param, "TEST"):
        mixes = layer.type == "LRN" and layer.lrn_param.norm_region != layer.lrn_param.WITHIN_CHANNEL
        cut_input = any(
            b in graph.layouts and positions(graph, graph.layouts[b], kept) is not None for b in layer.bottom
        )
        if (mixes and cut_input) or any(b in tainted for b in layer.bottom):
            tainted.update(layer.top)
    return tainted


def feed_random_inputs(nets: list[Any], net_param: Any, rng: np.random.Generator) -> None:
    """The same seeded random values into the Input layers of both nets."""
    for layer in layers_in_phase(net_param, "TEST"):
        if layer.type == "Input":
            for top in layer.top:
                data = rng.random(nets[0].blobs[top].data.shape, dtype=np.float32)
                for net in nets:
                    net.blobs[top].data[...] = data


def split_source(blob: str, known: dict[str, Any] | set[str]) -> str | None:
    """The blob an implicit Split copies: Caffe names the copies <blob>_<layer>_<i>_split_<j>."""
    if "_split_" not in blob:
        return None
    candidates = [name for name in known if blob.startswith(name + "_")]
    return max(candidates, key=len) if candidates else None


def compare_blobs(masked: Any, trimmed: Any, layouts: dict[str, tuple[Layout, np.ndarray | None]],
                  inexact: set[str]) -> tuple:  # fmt: skip
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
        mixed = blob in inexact or split_source(blob, inexact) is not None
        checks[blob] = BlobCheck(blob, diff, float(np.abs(want).max()) if want.size else 0.0, mixed)
    return checks, problems


def signal_problems(masked: Any, graph: Graph, kept: dict[int, np.ndarray]) -> list[str]:
    """Cut groups whose kept channels are constant in every blob that carries them: the
    comparison would prove nothing there (a net whose weights are all zero, say)."""
    silent = []
    for gid, keep in kept.items():
        varies = False
        for blob, layout in graph.layouts.items():
            offset = 0
            for s in layout.segments:
                if graph.root(s.group) == gid and blob in masked.blobs and masked.blobs[blob].data.ndim >= 2:
                    inside = keep[(keep >= s.start) & (keep < s.start + s.length)] - s.start + offset
                    values = np.take(masked.blobs[blob].data, elements(inside, layout.spatial), axis=1)
                    varies = varies or (values.size > 0 and float(np.ptp(values)) > 1e-6 * float(np.abs(values).max()))
                offset += s.length
        if not varies:
            silent.append(graph.group(gid).name)
    return [f"the blobs carrying {', '.join(silent)} are constant: the net computes nothing there (zero or "
            "constant weights?), so the comparison proves nothing"] if silent else []  # fmt: skip


def run_nets(masked: Any, trimmed: Any, net_param: Any, batches: int, seed: int, feed: Feed | None,
             compare: Any) -> list[Any]:  # fmt: skip
    """Forward both nets over `batches` batches of the same inputs; `compare` after each."""
    rng, data = np.random.default_rng(seed), data_source(net_param, None, feed) if feed is not None else None
    outcomes = []
    for index in range(max(1, batches)):
        if data is not None:
            for net in (masked, trimmed):
                data.feed(net, index % math.ceil(data.total / data.batch))
        else:
            feed_random_inputs([masked, trimmed], net_param, rng)
        masked.forward()
        trimmed.forward()
        outcomes.append(compare())
    return outcomes


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
    saved_recipe: dict[str, LayerCut] | None = None,
    inexact_tol: float = INEXACT_TOL,
) -> VerifyResult:
    """Replay the recipe on the weights, then compare the silenced original with the trimmed
    net over `batches` forward passes (a deploy net gets seeded random input, or the images
    of `feed`); `saved_recipe` (recipe.json) must be the recipe the selections give."""
    net_param, shapes = read_net(net_path), probe(net_path)
    graph = build_graph(net_param, shapes.blobs, allow_inexact=allow_inexact)
    kept, cuts = selection_of(graph, selections), recipe(graph, selections)
    result = VerifyResult(ok=False, tol=tol, inexact_tol=inexact_tol)
    result.inexact = sorted({reason for name in selections for reason in group_of(graph, name).inexact})
    if saved_recipe is not None and recipe_json(saved_recipe) != recipe_json(cuts):
        result.problems.append("the saved recipe is not the recipe the selection gives")
    with Caffemodel(weights) as model:
        biases = folded_biases(graph, kept, model, shapes, fold)
    differ = replay(Path(weights), Path(trimmed_weights), shapes, cuts, biases)
    if differ:
        result.problems.append(
            f"the trimmed weights of {', '.join(map(repr, differ))} are not the recipe's cut of the original"
        )
    masked = masked_original(Path(net_path), Path(weights), graph, kept, biases)
    trimmed = load_net(trimmed_net_path, trimmed_weights)
    layouts = {blob: (layout, positions(graph, layout, kept)) for blob, layout in graph.layouts.items()}
    mixed = inexact_blobs(net_param, graph, kept) if result.inexact else set()
    runs = run_nets(masked, trimmed, net_param, batches, seed, feed,
                    lambda: compare_blobs(masked, trimmed, layouts, mixed))  # fmt: skip
    result.problems += signal_problems(masked, graph, kept)
    worst: dict[str, BlobCheck] = {}
    for checks, problems in runs:
        result.problems += problems
        for blob, check in checks.items():
            if blob not in worst or check.relative > worst[blob].relative:
                worst[blob] = check
    result.checks, result.problems = list(worst.values()), list(dict.fromkeys(result.problems))
    result.judge()
    return result
