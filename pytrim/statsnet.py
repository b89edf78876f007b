"""Count zeros inside Caffe: a statistics copy of the net, for GPUs and for `caffe test`.

On a GPU, copying every activation to the host costs more than the forward pass. In the
statistics copy of a net, every measured blob also feeds Threshold(0) (1 where x > 0, else
0) and a global average Pooling, so the net outputs per image and channel the fraction of
non-zero positions: N x C numbers per blob (for an InnerProduct output, N x C already, the
thresholded blob is the fraction), computed where the activations are. The zero
count of an image's channel is M * (1 - fraction), exact after rounding (the fraction is
k/M with k < 2^24, so float32 rounding stays far below one half). The copy runs with
pycaffe (`collect(..., device_counting=True)`) or with Caffe's own `caffe test` command,
which averages every output element over its iterations (printed with six significant
digits, so counts from that path are approximate), where pycaffe is not available.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffe_env import caffe_tool
from pytrim.errors import CaffeCrashed
from pytrim.protoutil import read_net, write_text
from pytrim.runner import run_child
from pytrim.train import caffe_env

PREFIX_NZ, PREFIX_FRAC = "pytrim_nz_", "pytrim_frac_"


def frac_blob(layer: str) -> str:
    return PREFIX_FRAC + layer


def stats_net(net_param: Any, targets: dict[str, tuple[str, bool]]) -> Any:
    """A copy of `net_param` with Threshold(0) + global AVE Pooling after each target blob."""
    net = copy.deepcopy(net_param)
    inserts = []
    for layer_name, (blob, _) in targets.items():
        writers = [i for i, layer in enumerate(net.layer) if blob in layer.top]
        if not writers:
            raise ValueError(f"no layer writes blob {blob!r}")
        inserts.append((writers[-1], layer_name, blob))
    types = {layer.name: layer.type for layer in net.layer}
    for index, layer_name, blob in sorted(inserts, reverse=True):
        # An InnerProduct output is (N, C): the thresholded blob is already the fraction.
        flat = types.get(layer_name) == "InnerProduct"
        threshold = type(net.layer[0])()
        threshold.name = PREFIX_NZ + layer_name
        threshold.type = "Threshold"
        threshold.bottom.append(blob)
        threshold.top.append(frac_blob(layer_name) if flat else PREFIX_NZ + layer_name)
        threshold.threshold_param.threshold = 0.0
        extras = [threshold]
        if not flat:
            pooling = type(net.layer[0])()
            pooling.name = frac_blob(layer_name)
            pooling.type = "Pooling"
            pooling.bottom.append(PREFIX_NZ + layer_name)
            pooling.top.append(frac_blob(layer_name))
            pooling.pooling_param.pool = pooling.pooling_param.AVE
            pooling.pooling_param.global_pooling = True
            extras.append(pooling)
        for offset, extra in enumerate(extras, 1):
            net.layer.insert(index + offset, extra)
    return net


def zeros_from_fractions(fractions: np.ndarray, positions: int) -> np.ndarray:
    """Per-channel zero counts from per-image non-zero fractions (N, C[, 1, 1])."""
    fractions = fractions.reshape(fractions.shape[0], -1).astype(np.float64)
    return np.rint(positions * (1.0 - fractions)).astype(np.int64).sum(axis=0)


def write_stats_net(net_path: str | Path, targets: dict[str, tuple[str, bool]], out: str | Path) -> Path:
    return write_text(stats_net(read_net(net_path), targets), out)


FINAL_RE = re.compile(r"\] (pytrim_frac_\S+) = (\S+)")


def caffe_test_fractions(
    stats_prototxt: Path, weights: str | Path, iterations: int, log: Path, gpu: str | None = None
) -> dict[str, np.ndarray]:
    """Run `caffe test` on a statistics net; return per layer the mean non-zero fraction of
    each (image slot, channel) element over the iterations, as printed by Caffe."""
    args = [
        caffe_tool("caffe"),
        "test",
        f"--model={stats_prototxt}",
        f"--weights={weights}",
        f"--iterations={iterations}",
    ]
    if gpu is not None:
        args.append(f"--gpu={gpu}")
    run_child(args, log, "caffe test", env=caffe_env(), error=CaffeCrashed)
    values: dict[str, list[float]] = {}
    lines = log.read_text().splitlines()
    final = [line for line in lines if "Batch " not in line]
    for line in final:
        match = FINAL_RE.search(line)
        if match:
            values.setdefault(match.group(1)[len(PREFIX_FRAC) :], []).append(float(match.group(2)))
    return {name: np.asarray(v) for name, v in values.items()}
