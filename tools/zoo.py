#!/usr/bin/env python3
"""Write a public model-zoo net as prototxt, generated with pycaffe's NetSpec
(pytrim/caffeio/zoo.py), or one of pytrim's Fashion-MNIST benchmark nets.

A thin wrapper of `python -m pytrim zoo` (pytrim/cli/zoo.py); --help for its options."""

from pytrim.cli import run

if __name__ == "__main__":
    run("zoo")
