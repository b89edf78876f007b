"""Count zeros inside Caffe: a statistics copy of the net, for GPUs and for `caffe test`.

On a GPU, copying every activation to the host costs more than the forward pass. In the
statistics copy of a net, every measured blob also feeds Threshold(0) (1 where x > 0, else
0) and a global average Pooling, so the net outputs per image and channel the fraction of
non-zero positions: N x C numbers per blob (for an InnerProduct output, N x C already, the
thresholded blob is the fraction), computed where the activations are. The zero
count of an image's channel is M * (1 - fraction), exact after rounding (the fraction is
k/M with k < 2^24, so float32 rounding stays far below one half). The copy runs with
pycaffe (`collect(..., device_counting=True)`); Caffe's own `caffe test` can run it too
(tests/test_trimming.py does), but it prints averages with six significant digits, so
counts from that path are only approximate.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.proto import read_net, write_text

PREFIX_NZ, PREFIX_FRAC = "pytrim_nz_", "pytrim_frac_"


def frac_blob(blob: str) -> str:
    return PREFIX_FRAC + blob.replace("/", "_")


def _extra(net: Any, name: str, kind: str, bottom: str, top: str) -> Any:
    layer = type(net.layer[0])()
    layer.name, layer.type = name, kind
    layer.bottom.append(bottom)
    layer.top.append(top)
    return layer


def stats_net(net_param: Any, blobs: dict[str, int]) -> Any:
    """A copy of `net_param` with Threshold(0) + global AVE Pooling after each measured blob
    (`blobs`: blob -> its number of axes; a 2-d blob needs no pooling)."""
    net = copy.deepcopy(net_param)
    for blob, ndim in blobs.items():
        writers = [i for i, layer in enumerate(net.layer) if blob in layer.top]
        if not writers:
            raise ValueError(f"no layer writes blob {blob!r}")
        nonzero = PREFIX_NZ + blob.replace("/", "_")
        threshold = _extra(net, nonzero, "Threshold", blob, frac_blob(blob) if ndim <= 2 else nonzero)
        threshold.threshold_param.threshold = 0.0
        extras = [threshold]
        if ndim > 2:
            pooling = _extra(net, frac_blob(blob), "Pooling", nonzero, frac_blob(blob))
            pooling.pooling_param.pool = pooling.pooling_param.AVE
            pooling.pooling_param.global_pooling = True
            extras.append(pooling)
        last = writers[-1]
        for offset, extra in enumerate(extras, 1):
            net.layer.insert(last + offset, extra)
    return net


def zeros_from_fractions(fractions: np.ndarray, positions: int) -> np.ndarray:
    """Per-channel zero counts from per-image non-zero fractions (N, C[, 1, 1])."""
    fractions = fractions.reshape(fractions.shape[0], -1).astype(np.float64)
    return np.rint(positions * (1.0 - fractions)).astype(np.int64).sum(axis=0)


def write_stats_net(net_path: str | Path, blobs: dict[str, int], out: str | Path) -> Path:
    return write_text(stats_net(read_net(net_path), blobs), out)
