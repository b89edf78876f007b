"""Choose the neurons to cut from per-neuron scores (APoZ: higher means more prunable).

Rules, per layer:
- `mean_std` (the paper's, on APoZ): remove neurons whose score > mean + k * std of the
  layer's scores (k = 1);
- `ratio`: remove the given fraction of the layer's neurons, highest scores first;
- `count`: remove exactly that many, highest scores first;
- `keep`: keep exactly that many (a width plan, e.g. the paper's VGG-16 Trim-1...Trim-6 nets),
  removing the highest scores.
Every rule respects a minimum number of neurons to keep (at least 1: a layer is never
emptied); when the rule asks for more, the highest-scoring neurons among its choice go.
`round_to` N rounds the number kept *up* to a multiple of N (the next best neurons by score
stay), never beyond the layer's width: CPU kernels run fastest on such widths. A grouped
convolution's blocks each keep a multiple of N / blocks (when the blocks divide N, else of N).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pytrim.core.errors import BadInput, StatsMismatch, few
from pytrim.core.files import read_json, sha256_file

RULES = ("mean_std", "ratio", "count", "keep")

Parts = list[tuple[str, np.ndarray]] | tuple[()]


@dataclass
class Rule:
    """How to choose the neurons of one layer."""

    kind: str = "mean_std"  # "mean_std", "ratio", "count" or "keep"
    k: float = 1.0  # mean_std: threshold = mean + k * std
    ratio: float = 0.0  # ratio: fraction to remove
    count: int = 0  # count: how many to remove
    keep: int = 0  # keep: how many to keep
    min_keep: int = 1  # never keep fewer
    round_to: int = 1  # keep a multiple of this many (rounded up)

    def __post_init__(self) -> None:
        if self.kind not in RULES:
            raise BadInput(f"unknown selection rule {self.kind!r} ({', '.join(RULES)})")
        if not math.isfinite(self.k):
            raise BadInput(f"k must be a finite number, not {self.k}")
        if self.round_to < 1:
            raise BadInput(f"round_to must be at least 1, not {self.round_to}")
        if self.kind == "keep" and self.keep < 1:
            raise BadInput(f"a width plan must keep at least 1 neuron, not {self.keep}")
        if not 0.0 <= self.ratio < 1.0:
            raise BadInput(f"ratio must be in [0, 1), not {self.ratio}")
        if self.count < 0:
            raise BadInput(f"count must be >= 0, not {self.count}")
        self.min_keep = max(1, int(self.min_keep))


@dataclass
class Selection:
    """The neurons of one layer to keep and to remove (sorted indices)."""

    layer: str
    width: int
    keep: np.ndarray
    remove: np.ndarray
    threshold: float | None = None

    def to_json(self) -> dict:
        return {
            "layer": self.layer,
            "width": self.width,
            "kept": len(self.keep),
            "keep": self.keep.tolist(),
            "remove": self.remove.tolist(),
            "threshold": self.threshold,
        }

    @classmethod
    def from_json(cls, data: dict) -> Selection:
        return cls(
            data["layer"],
            int(data["width"]),
            np.asarray(data["keep"], dtype=np.int64),
            np.asarray(data["remove"], dtype=np.int64),
            data.get("threshold"),
        )


def removed_count(scores: np.ndarray, rule: Rule) -> tuple[int, float | None]:
    """How many neurons the rule removes (before min_keep and rounding), and its threshold."""
    width = scores.size
    if rule.kind == "mean_std":
        threshold = float(scores.mean() + rule.k * scores.std())
        return int(np.count_nonzero(scores > threshold)), threshold
    if rule.kind == "ratio":
        return math.floor(rule.ratio * width), None
    if rule.kind == "keep":
        return width - rule.keep, None
    return rule.count, None


def kept_per_block(width: int, blocks: int, wanted: int, rule: Rule) -> int:
    """Neurons each block keeps: at least min_keep (shared by the blocks) and one, rounded up
    to the rounding step, at most the block's width."""
    per = width // blocks
    keep = max(math.ceil((width - wanted) / blocks), math.ceil(min(rule.min_keep, width) / blocks), 1)
    step = rule.round_to // blocks if rule.round_to % blocks == 0 else rule.round_to
    if rule.kind != "keep" and step > 1:
        keep = math.ceil(keep / step) * step
    return min(keep, per)


def choose(layer: str, scores: np.ndarray, rule: Rule, blocks: int = 1, parts: Parts = ()) -> Selection:
    """Apply `rule` to the scores of one layer (higher score = removed first). With `blocks`
    > 1 (a grouped convolution reads or writes these channels) the same number is removed
    from each of the equal blocks, the highest scores of each block first. Each of `parts`
    (the channels of one layer of a joined group) keeps at least its lowest score."""
    scores = np.asarray(scores, dtype=np.float64)
    width = scores.size
    if width == 0:
        raise BadInput(f"layer {layer!r} has no neurons")
    if rule.kind == "keep" and rule.keep > width:
        raise BadInput(f"layer {layer!r} has {width} neurons: cannot keep {rule.keep}")
    wanted, threshold = removed_count(scores, rule)
    per = width // blocks
    taken = per - kept_per_block(width, blocks, wanted, rule)
    order = [b * per + np.argsort(-scores[b * per : (b + 1) * per], kind="stable")[:taken] for b in range(blocks)]
    remove = np.sort(np.concatenate(order))
    for _, part in parts:
        if np.isin(part, remove).all():
            remove = remove[remove != part[np.argmin(scores[part])]]
    keep = np.setdiff1d(np.arange(width), remove)
    return Selection(layer, width, keep, remove, threshold)


def load_selection(path: str | Path, weights: str | Path | None = None) -> dict[str, Selection]:
    """Read a selection JSON (tools/choose.py); with `weights`, refuse one made for other weights."""
    data = read_json(path, "selection file")
    entries = data.get("layers")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise BadInput(f"{path}: not a valid selection file: 'layers' must be a list of layer entries")
    if weights is not None and data.get("weights_sha256") and sha256_file(weights) != data["weights_sha256"]:
        raise StatsMismatch(f"{path} was chosen from statistics of other weights than {weights}")
    try:
        selections = {entry["layer"]: Selection.from_json(entry) for entry in entries}
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"{path}: not a valid selection file: bad layer entry ({exc!r})") from None
    for selection in selections.values():
        check_partition(selection, path)
    return selections


def check_partition(selection: Selection, path: str | Path) -> None:
    """`keep` and `remove` split the layer's channels 0..width-1: each channel exactly once."""
    keep, remove, width = selection.keep.tolist(), selection.remove.tolist(), selection.width
    both = sorted(set(keep) & set(remove))
    twice = sorted(c for c, n in (Counter(keep) + Counter(remove)).items() if n > 1 and c not in both)
    outside = sorted({c for c in keep + remove if not 0 <= c < width})
    missing = sorted(set(range(width)) - set(keep) - set(remove)) if width <= 1 << 20 else []
    problems = [(both, "in both keep and remove"), (twice, "listed twice"), (outside, f"outside 0..{width - 1}"),
                (missing, "in neither keep nor remove")]  # fmt: skip
    found = [f"channels {few(channels)} {what}" for channels, what in problems if channels]
    if found:
        raise BadInput(f"{path}: layer {selection.layer!r}: keep and remove must split its {width} channels, each "
                       f"once: {'; '.join(found)}")  # fmt: skip


def overlap(a: Selection, b: Selection) -> dict[str, float | int]:
    """How alike two choices of neurons to remove are (e.g. from validation vs training data)."""
    removed_a, removed_b = set(a.remove.tolist()), set(b.remove.tolist())
    both, either = removed_a & removed_b, removed_a | removed_b
    return {
        "removed_a": len(removed_a),
        "removed_b": len(removed_b),
        "common": len(both),
        "jaccard": len(both) / len(either) if either else 1.0,
        "share_of_a": len(both) / len(removed_a) if removed_a else 1.0,
    }
