"""Prove a cut: the trimmed net equals the original net with the removed neurons silenced.

The original net gets the weight rows and bias entries of removed neurons set to zero, so
those neurons output exactly zero (before and after ReLU/pooling/dropout). Both nets then
run on the same inputs (the same TEST data from the start, or the same seeded random input
for a deploy net); every blob of the trimmed net must equal the matching blob of the masked
net (its kept channels, where the blob carries trimmed channels) within `tol` relative to
the blob's scale, and the removed channels of the masked net must be zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pytrim.choose import Selection
from pytrim.graph import trim_site
from pytrim.netcheck import load_net
from pytrim.protoutil import read_net


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
    """Per-blob differences; `ok` when every relative difference is within `tol`."""

    ok: bool
    tol: float
    checks: list[BlobCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def max_relative(self) -> float:
        return max((c.relative for c in self.checks), default=0.0)

    @property
    def max_abs_diff(self) -> float:
        return max((c.max_abs_diff for c in self.checks), default=0.0)

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "tol": self.tol,
            "max_relative_diff": self.max_relative,
            "max_abs_diff": self.max_abs_diff,
            "problems": self.problems,
            "blobs": {c.blob: {"max_abs_diff": c.max_abs_diff, "scale": c.scale} for c in self.checks},
        }


def verify(
    net_path: str | Path,
    weights: str | Path,
    trimmed_net_path: str | Path,
    trimmed_weights: str | Path,
    selections: dict[str, Selection],
    tol: float = 1e-5,
    batches: int = 1,
    seed: int = 0,
) -> VerifyResult:
    """Compare the masked original with the trimmed net over `batches` forward passes."""
    net_param = read_net(net_path)
    channel_blobs: dict[str, str] = {}  # blob -> trimmed layer whose channels it carries
    for name in selections:
        for blob in trim_site(net_param, name).blobs:
            channel_blobs[blob] = name
    masked = load_net(net_path, weights)
    trimmed = load_net(trimmed_net_path, trimmed_weights)
    for name, selection in selections.items():
        for param in masked.params[name]:
            if param.data.shape[0] == selection.width:
                param.data[selection.remove] = 0

    inputs = [layer for layer in net_param.layer if layer.type == "Input"]
    rng = np.random.default_rng(seed)
    result = VerifyResult(ok=True, tol=tol)
    worst: dict[str, BlobCheck] = {}
    for _ in range(max(1, batches)):
        for layer in inputs:
            for top in layer.top:
                data = rng.random(masked.blobs[top].data.shape, dtype=np.float32)
                masked.blobs[top].data[...] = data
                trimmed.blobs[top].data[...] = data
        masked.forward()
        trimmed.forward()
        for blob, got in trimmed.blobs.items():
            if blob not in masked.blobs:
                result.problems.append(f"blob {blob!r} exists only in the trimmed net")
                continue
            want = masked.blobs[blob].data
            if blob in channel_blobs:
                selection = selections[channel_blobs[blob]]
                removed = want[:, selection.remove]
                if removed.size and np.abs(removed).max() != 0:
                    result.problems.append(f"blob {blob!r}: removed channels of the masked net are not zero")
                want = want[:, selection.keep]
            if want.shape != got.data.shape:
                result.problems.append(f"blob {blob!r}: shape {got.data.shape}, expected {want.shape}")
                continue
            diff = float(np.abs(got.data - want).max()) if want.size else 0.0
            scale = float(np.abs(want).max()) if want.size else 0.0
            check = BlobCheck(blob, diff, scale)
            if blob not in worst or check.relative > worst[blob].relative:
                worst[blob] = check
    result.checks = list(worst.values())
    result.problems = list(dict.fromkeys(result.problems))
    result.ok = not result.problems and all(c.relative <= tol for c in result.checks)
    return result
