"""ONNX files and their forward time in ONNX Runtime: one thread, a fixed batch size, the
original and the pruned nets timed interleaved (round after round, each sample long enough
to be measured), as pytrim.stats.cost times Caffe. The ratio kept is the median of the
per-round ratios original / pruned (> 1: the pruned net is faster)."""

from __future__ import annotations

import contextlib
import io
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

MIN_SECONDS = 0.05


def export(model: nn.Module, batch: int, path: Path) -> Path:
    """The model as ONNX (torch.onnx.export, its default exporter) for input batches of `batch`."""
    model.eval()
    shape = model.spec["input"]["shape"]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(batch, *shape),), str(path))
    return path


def session(path: Path) -> Any:
    """An ONNX Runtime session on one thread (CPU)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def sample(run: Any, feed: dict[str, np.ndarray], forwards: int) -> float:
    start = time.perf_counter()
    for _ in range(forwards):
        run(None, feed)
    return (time.perf_counter() - start) / forwards


def time_onnx(paths: list[Path], repeats: int, batch: int) -> dict[str, list[float]]:
    """Seconds per forward of each file (medians) and each file's ratio to the first (median
    of the rounds' ratios), all fed one random input of `batch` images (a file's dynamic batch
    dimension takes it)."""
    sessions = [session(p) for p in paths]
    shape = [d if isinstance(d, int) else batch for d in sessions[0].get_inputs()[0].shape]
    shape[0] = batch
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    feeds = [{s.get_inputs()[0].name: x} for s in sessions]
    counts = []
    for s, feed in zip(sessions, feeds, strict=True):
        sample(s.run, feed, 3)  # warm-up
        once = sample(s.run, feed, 1)
        counts.append(max(1, int(MIN_SECONDS / max(once, 1e-6))))
    rounds = [[sample(s.run, f, n) for s, f, n in zip(sessions, feeds, counts, strict=True)] for _ in range(repeats)]
    seconds = [statistics.median(r[i] for r in rounds) for i in range(len(paths))]
    ratios = [statistics.median(r[0] / r[i] for r in rounds) for i in range(len(paths))]
    return {"seconds": seconds, "ratio": ratios}
