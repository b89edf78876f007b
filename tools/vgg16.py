#!/usr/bin/env python3
"""VGG-16 Network Trimming (the paper's headline experiment) and its synthetic stand-in.

A thin wrapper of `python -m pytrim vgg16` (pytrim/cli/vgg16.py); --help for its options."""

from pytrim.cli import run

if __name__ == "__main__":
    run("vgg16")
