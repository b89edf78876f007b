#!/usr/bin/env python3
"""VGG-16 Network Trimming (the paper's headline experiment) and its synthetic stand-in. (a
thin wrapper of `python -m pytrim vgg16`, pytrim/cli/vgg16.py; --help for its options)."""

from pytrim.cli import run
from pytrim.cli.vgg16 import main

if __name__ == "__main__":
    run(main)
