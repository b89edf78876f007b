#!/usr/bin/env python3
"""Put ImageNet (ILSVRC2012) where prototxt/vgg16/train_val.prototxt reads it: a thin
wrapper of `python -m pytrim prepare-imagenet` (pytrim/cli/prepare_imagenet.py)."""

from pytrim.cli import run
from pytrim.cli.prepare_imagenet import main

if __name__ == "__main__":
    run(main)
