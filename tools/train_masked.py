#!/usr/bin/env python3
"""Retrain a net whose pruned connections must stay zero: Caffe's own solver, stepped from
pycaffe one iteration at a time, with the masks re-applied to the weights after every step
(Caffe has no masked layer). Masks: an .npz of layer -> boolean array of the weight's shape
(True = keep). A NaN/infinite loss stops the run; --out is written only at the end.

A thin wrapper of `python -m pytrim train-masked` (pytrim/cli/train_masked.py); --help for its options."""

from pytrim.cli import run

if __name__ == "__main__":
    run("train-masked")
