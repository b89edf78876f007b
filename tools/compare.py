#!/usr/bin/env python3
"""Two caffemodels side by side on the same data (e.g. the published VGG-16 vs a trimmed one).
(a thin wrapper of `python -m pytrim compare`, pytrim/cli/compare.py; --help for its
options)."""

from pytrim.cli import run
from pytrim.cli.compare import main

if __name__ == "__main__":
    run(main)
