"""Retrain with pruned connections held at exactly zero.

Caffe has no masked layer, so its own solver is stepped from pycaffe one iteration at a
time and the masks are applied to the parameters after every step. A mask is keyed by layer
("ip1": its weights) or by layer and blob ("ip1#1": its bias); True keeps. With
`select_every`, the weights are scored on a validation LMDB every so many iterations and the
best ones are kept (as the NN Relief authors keep their best epoch, on validation rather
than test data). A NaN/infinite loss stops the run; the output caffemodel is written only
at the end.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.caffemodel import Caffemodel
from pytrim.caffeio.env import load_caffe
from pytrim.caffeio.netcheck import check_model
from pytrim.caffeio.proto import read_net, read_solver, with_test_data, write_solver
from pytrim.core.errors import BadInput, TrainingDiverged
from pytrim.core.files import together
from pytrim.stats.evaluate import score_net

Masks = dict[str, np.ndarray]  # "layer" (weights) or "layer#1" (bias) -> keep


def load_masks(path: str | Path) -> dict[str, np.ndarray]:
    """Masks saved with np.savez (key -> keep array)."""
    try:
        with np.load(path) as stored:
            return {name: stored[name].astype(bool) for name in stored.files}
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path}: not a readable masks file ({exc})") from None


def target(net: Any, key: str) -> Any:
    """The parameter blob a mask key names ("layer" or "layer#index")."""
    name, _, index = key.partition("#")
    if name not in net.params or int(index or 0) >= len(net.params[name]):
        raise BadInput(f"the mask {key!r} names no parameter of the net")
    return net.params[name][int(index or 0)]


def apply_masks(net: Any, masks: dict[str, np.ndarray]) -> None:
    for key, mask in masks.items():
        target(net, key).data[...] *= mask


def masked_weights(source: Any, masks: Masks, out: Any) -> Any:
    """A copy of a caffemodel with the masked parameters set to zero."""

    with Caffemodel(source) as model:
        replace: dict[str, list[np.ndarray]] = {}
        for key, mask in masks.items():
            name, _, index = key.partition("#")
            arrays = replace.setdefault(name, model.arrays(name))
            arrays[int(index or 0)] = arrays[int(index or 0)].reshape(mask.shape) * mask
        return model.write(out, replace)


def _solver(solver_path: Path, net_path: Path, iterations: int | None, tmp: Path) -> tuple[Any, Any]:
    """A pycaffe solver over a copy of the solver file with Caffe's own testing and snapshots
    off (a test net is still built: pytrim scores the validation data with it)."""
    param = write_solver(
        solver_path,
        tmp / "solver.prototxt",
        net=str(net_path),
        max_iter=iterations,
        test_iter=[1],
        test_interval=10**9,
        test_initialization=False,
        snapshot=0,
        snapshot_after_train=False,
        display=0,
    )
    caffe = load_caffe()
    return caffe.get_solver(str(tmp / "solver.prototxt")), param


def validation_top1(solver: Any, net_param: Any) -> float:
    """Top-1 of the solver's test net (sharing the weights) over its TEST data."""
    test = solver.test_nets[0]
    test.share_with(solver.net)  # Caffe shares the trained weights only in its own Solver::Test
    return score_net(test, net_param).top1


def step_masked(solver: Any, masks: dict[str, np.ndarray], iterations: int, progress: bool) -> float:
    from tqdm import tqdm

    loss_blob = next((b for b in solver.net.outputs if "loss" in b), solver.net.outputs[0])
    loss = math.nan
    for _ in tqdm(range(iterations), desc="masked train", unit="it", disable=not progress, leave=False):
        solver.step(1)
        apply_masks(solver.net, masks)
        loss = float(solver.net.blobs[loss_blob].data)
        if not math.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss} at iteration {solver.iter}")
    return loss


def train_masked(
    solver_path: Path,
    weights: Path,
    masks: dict[str, np.ndarray],
    out: Path,
    net_path: Path | None = None,
    iterations: int | None = None,
    progress: bool = True,
    select_every: int = 0,
    val_source: Path | None = None,
) -> dict[str, Any]:
    """Fine-tune `weights` for `iterations` solver steps, masked parameters held at zero;
    with `select_every` and `val_source`, keep the weights that score best on validation."""
    with tempfile.TemporaryDirectory(prefix="pytrim-masked-") as tmp:
        net_file = Path(net_path or read_solver(solver_path).net)
        check_model(net_file, weights, "TRAIN")
        if val_source is not None:
            net_file = with_test_data(net_file, val_source, Path(tmp) / "train_val.prototxt")
        solver, param = _solver(solver_path, net_file, iterations, Path(tmp))
        net_param = read_net(net_file)
    solver.net.copy_from(str(weights))
    apply_masks(solver.net, masks)
    every = select_every if select_every and val_source is not None else param.max_iter
    best, best_at, loss = -1.0, 0, math.nan
    while solver.iter < param.max_iter:
        loss = step_masked(solver, masks, min(every, param.max_iter - solver.iter), progress)
        if select_every and val_source is not None:
            top1 = validation_top1(solver, net_param)
            if top1 > best:
                best, best_at = top1, solver.iter
                solver.net.save(str(Path(out).with_suffix(".best.caffemodel")))
    with together([out]) as (partial,):
        if best_at:
            Path(out).with_suffix(".best.caffemodel").replace(partial)
        else:
            solver.net.save(str(partial))
    kept = sum(int(m.sum()) for m in masks.values())
    return {"iterations": param.max_iter, "final_loss": loss, "kept": kept, "val_top1": best, "best_iteration": best_at}
