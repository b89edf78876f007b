#!/usr/bin/env python3
"""Write a public model-zoo net as prototxt, generated with NetSpec (a thin wrapper of
`python -m pytrim zoo`, pytrim/cli/zoo.py; --help for its options)."""

from pytrim.cli import run
from pytrim.cli.zoo import main

if __name__ == "__main__":
    run(main)
