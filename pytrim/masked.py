"""Retrain with pruned connections held at exactly zero.

Caffe has no masked layer, so its own solver is stepped from pycaffe one iteration at a
time and the masks (layer -> boolean array of the weight's shape, True = keep) are applied
to the weights after every step. A NaN/infinite loss stops the run; the output caffemodel
is written only at the end.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffe_env import load_caffe
from pytrim.errors import BadInput, TrainingDiverged
from pytrim.files import together
from pytrim.netcheck import check_model
from pytrim.protoutil import read_solver
from pytrim.train import write_solver


def load_masks(path: str | Path) -> dict[str, np.ndarray]:
    """Masks saved with np.savez (layer -> keep array)."""
    try:
        with np.load(path) as stored:
            return {name: stored[name].astype(bool) for name in stored.files}
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path}: not a readable masks file ({exc})") from None


def apply_masks(net: Any, masks: dict[str, np.ndarray]) -> None:
    for name, mask in masks.items():
        net.params[name][0].data[...] *= mask


def _solver(solver_path: Path, net_path: Path | None, iterations: int | None, tmp: Path) -> tuple[Any, Any]:
    """A pycaffe solver over a copy of the solver file with testing and snapshots off."""
    param = write_solver(
        solver_path,
        tmp / "solver.prototxt",
        net=str(net_path) if net_path else None,
        max_iter=iterations,
        test_interval=10**9,
        test_initialization=False,
        snapshot=0,
        snapshot_after_train=False,
        display=0,
    )
    caffe = load_caffe()
    return caffe.get_solver(str(tmp / "solver.prototxt")), param


def train_masked(
    solver_path: Path,
    weights: Path,
    masks: dict[str, np.ndarray],
    out: Path,
    net_path: Path | None = None,
    iterations: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune `weights` for `iterations` solver steps, masked weights held at zero."""
    from tqdm import tqdm

    with tempfile.TemporaryDirectory(prefix="pytrim-masked-") as tmp:
        check_model(net_path or Path(read_solver(solver_path).net), weights, "TRAIN")
        solver, param = _solver(solver_path, net_path, iterations, Path(tmp))
    solver.net.copy_from(str(weights))
    for name, mask in masks.items():
        if name not in solver.net.params or solver.net.params[name][0].data.shape != mask.shape:
            raise BadInput(f"the mask for {name!r} does not fit the net's weights")
    apply_masks(solver.net, masks)
    loss_blob = next((b for b in solver.net.outputs if "loss" in b), solver.net.outputs[0])
    for _ in tqdm(range(param.max_iter), desc="masked train", unit="it", disable=not progress, leave=False):
        solver.step(1)
        apply_masks(solver.net, masks)
        loss = float(solver.net.blobs[loss_blob].data)
        if not math.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss} at iteration {solver.iter}")
    with together([out]) as (partial,):
        solver.net.save(str(partial))
    return {"iterations": param.max_iter, "final_loss": loss, "kept": sum(int(m.sum()) for m in masks.values())}
