#!/usr/bin/env python3
"""What a net costs beside another (e.g. a trimmed net beside its original): parameters,
multiply-adds (MACs) per image, caffemodel bytes, and forward time measured by Caffe, the
nets timed interleaved in this process after a warm-up, the median of --repeats samples, at
batch 1 and a larger batch (8 for ImageNet-size inputs, else 32; or --batch), with --threads
BLAS threads (default: every core). Ratios are the first net over the second (> 1: the
second is smaller or faster).

A thin wrapper of `python -m pytrim speed` (pytrim/cli/speed.py); --help for its options."""

from pytrim.cli import run

if __name__ == "__main__":
    run("speed")
