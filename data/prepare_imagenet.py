#!/usr/bin/env python3
"""Put ImageNet (ILSVRC2012) where prototxt/vgg16/train_val.prototxt reads it.

A thin wrapper of `python -m pytrim prepare-imagenet` (pytrim/cli/prepare_imagenet.py); --help for its options."""

from pytrim.cli import run

if __name__ == "__main__":
    run("prepare-imagenet")
