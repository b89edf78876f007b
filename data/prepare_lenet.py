#!/usr/bin/env python3
"""Write LeNet's data as LMDBs of Caffe Datum records (train_lmdb, val_lmdb, test_lmdb).

A thin wrapper of `python -m pytrim prepare-lenet` (pytrim/cli/prepare_lenet.py); --help for its options."""

from pytrim.cli import run

if __name__ == "__main__":
    run("prepare-lenet")
