#!/usr/bin/env python3
"""Retrain a net whose pruned connections must stay zero: Caffe's own solver, stepped from
pycaffe one iteration at a time, with the masks re-applied to the weights after every step
(Caffe has no masked layer). Masks: an .npz of layer -> boolean array of the weight's shape
(True = keep). A NaN/infinite loss stops the run; --out is written only at the end.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from google.protobuf import text_format

from pytrim.caffe_env import load_caffe
from pytrim.caffemodel import Caffemodel
from pytrim.cli import run
from pytrim.collect import check_model_matches
from pytrim.protoutil import write_atomic
from pytrim.train import TrainingDiverged, read_solver


def apply_masks(net, masks: dict[str, np.ndarray]) -> None:
    for name, mask in masks.items():
        net.params[name][0].data[...] *= mask


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--solver", type=Path, required=True, help="solver prototxt")
    parser.add_argument("--net", type=Path, help="train_val prototxt (default: the solver's net)")
    parser.add_argument("--weights", type=Path, required=True, help="initial caffemodel")
    parser.add_argument("--masks", type=Path, required=True, help=".npz of layer -> keep mask")
    parser.add_argument("--max-iter", type=int, help="solver iterations (default: the solver's max_iter)")
    parser.add_argument("--out", type=Path, required=True, help="caffemodel to write")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    from tqdm import tqdm

    solver_param = read_solver(args.solver)
    if args.net:
        solver_param.net = str(args.net)
    iterations = args.max_iter if args.max_iter is not None else solver_param.max_iter
    solver_param.max_iter = iterations
    solver_param.test_interval = 10**9
    solver_param.test_initialization = False
    solver_param.snapshot = 0
    solver_param.snapshot_after_train = False
    solver_param.display = 0
    work = args.out.with_suffix(".solver.prototxt")
    write_atomic(work, text_format.MessageToString(solver_param).encode())
    caffe = load_caffe()
    solver = caffe.get_solver(str(work))
    with Caffemodel(args.weights) as model:
        check_model_matches(solver.net, model, solver_param.net)
    solver.net.copy_from(str(args.weights))
    with np.load(args.masks) as stored:
        masks = {name: stored[name].astype(np.float32) for name in stored.files}
    for name, mask in masks.items():
        if name not in solver.net.params or solver.net.params[name][0].data.shape != mask.shape:
            raise ValueError(f"mask for {name!r} does not fit the net's weights")
    apply_masks(solver.net, masks)
    loss_blob = next((b for b in solver.net.outputs if "loss" in b), solver.net.outputs[0])
    for _ in tqdm(range(iterations), desc="masked train", unit="it", disable=args.quiet, leave=False):
        solver.step(1)
        apply_masks(solver.net, masks)
        loss = float(solver.net.blobs[loss_blob].data)
        if not math.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss} at iteration {solver.iter}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial")
    solver.net.save(str(partial))
    partial.replace(args.out)
    work.unlink(missing_ok=True)
    kept = sum(int(m.sum()) for m in masks.values())
    print(f"trained {iterations} iterations with {kept:,} masked-layer weights kept: {args.out}")
    return 0


if __name__ == "__main__":
    run(main)
