"""Write a net as an ONNX model and keep it only when it is proven: translated
(pytrim.export.build), written under a temporary name, run in ONNX Runtime against Caffe
(pytrim.export.check), then renamed; a model that differs is removed and the difference is one
error naming the blob."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytrim.core.errors import VerifyFailed
from pytrim.core.files import together
from pytrim.export.build import translate
from pytrim.export.check import check_export
from pytrim.feeds.source import Feed


def save_onnx(net: Path, weights: Path, out: Path, feed: Feed | None = None, tol: float = 1e-5,
              seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Export `net` with `weights` to `out`, verified; what was exported and how close it is."""
    exported = translate(net, weights)
    with together([out]) as (partial,):
        partial.write_bytes(exported.model.SerializeToString())
        check = check_export(net, weights, partial, exported, tol, seed, feed)
        if not check.ok:
            raise VerifyFailed(check.failure())
    return {"onnx": str(out), "inputs": exported.inputs, "outputs": exported.outputs, "left_out": exported.left_out,
            "nodes": len(exported.model.graph.node), **check.to_json()}  # fmt: skip
