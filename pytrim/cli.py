"""Shared command-line behaviour: known failures become one clear line and exit code 1."""

from __future__ import annotations

import sys
from collections.abc import Callable

from pytrim.caffe_env import CaffeNotFound
from pytrim.collect import ModelMismatch, StatsMismatch
from pytrim.datasets import DatasetError
from pytrim.graph import UnsupportedTopology
from pytrim.loop import StepFailed
from pytrim.train import CaffeCrashed, TrainingDiverged

KNOWN_ERRORS = (
    CaffeNotFound,
    CaffeCrashed,
    TrainingDiverged,
    DatasetError,
    ModelMismatch,
    StatsMismatch,
    UnsupportedTopology,
    StepFailed,
    FileNotFoundError,
    ValueError,
    KeyError,
)


def run(main: Callable[[], int]) -> None:
    """Run a tool's main(); print `error: ...` and exit 1 on a known failure."""
    try:
        sys.exit(main())
    except KNOWN_ERRORS as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        if isinstance(exc, StepFailed):
            print("finished steps are saved: run the same command again to resume", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
