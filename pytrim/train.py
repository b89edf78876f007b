"""Train or fine-tune a net with Caffe's own solver, run as a child process.

Caffe ends the whole process on a failed CHECK and has crashed outright on runs that
diverged to NaN, so the solver runs as `caffe train` in a child process: its log is kept,
a crash becomes a `CaffeCrashed` error naming the log, and a NaN or infinite loss stops the
child before Caffe does (`TrainingDiverged`). Fine-tuning always starts from a caffemodel
(`--weights`), never from a solverstate, whose history blobs may have other shapes.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from pytrim.caffe_env import caffe_pb2, caffe_tool, gpu_device


class CaffeCrashed(RuntimeError):
    """A Caffe child process ended with an error (a failed CHECK, a signal)."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


LOSS_RE = re.compile(r"Iteration (\d+).*?, loss = (\S+)")
TEST_RE = re.compile(r"Test net output #\d+: (\S+) = (\S+)")


@dataclass
class TrainResult:
    """What a finished training run produced."""

    caffemodel: Path
    iterations: int
    final_loss: float
    seconds: float
    log: Path
    test_outputs: dict[str, float] = field(default_factory=dict)


def read_solver(path: str | Path) -> Any:
    """Parse a solver prototxt into a SolverParameter."""
    from pytrim.protoutil import read_text_proto

    return read_text_proto(path, caffe_pb2().SolverParameter(), "solver file")


def caffe_env() -> dict[str, str]:
    """Environment for Caffe children: log to stderr, not to files under /tmp."""
    env = dict(os.environ)
    env["GLOG_logtostderr"] = "1"
    env.pop("GLOG_minloglevel", None)
    return env


def run_caffe(
    args: list[str], log_path: Path, on_line: Callable[[str], None] | None = None, cwd: str | Path | None = None
) -> None:
    """Run one of Caffe's tools, streaming its output to `log_path` and to `on_line`.

    `on_line` may raise to stop the child (it is killed first). A non-zero exit raises
    CaffeCrashed with the last lines of the log.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=15)
    with (
        log_path.open("w") as log,
        subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=caffe_env(),
            cwd=cwd,
            bufsize=1,
        ) as child,
    ):
        assert child.stdout is not None
        try:
            for line in child.stdout:
                log.write(line)
                tail.append(line.rstrip())
                if on_line is not None:
                    on_line(line)
        except BaseException:
            child.kill()
            child.wait()
            raise
        code = child.wait()
    if code != 0:
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        last = "\n  ".join(tail)
        raise CaffeCrashed(f"`{Path(args[0]).name} {args[1]}` failed ({how}); log: {log_path}\n  {last}")


def train(
    solver_path: str | Path,
    out_caffemodel: str | Path,
    weights: str | Path | None = None,
    workdir: str | Path | None = None,
    max_iter: int | None = None,
    net_path: str | Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Run `caffe train` on a solver and save the final weights as `out_caffemodel`.

    The solver is copied into `workdir` with its snapshots redirected there (and, if given,
    another net or iteration budget); `weights` initialises the net (fine-tuning).
    """
    from tqdm import tqdm

    out_caffemodel = Path(out_caffemodel)
    workdir = Path(workdir) if workdir else out_caffemodel.with_suffix(".train")
    workdir.mkdir(parents=True, exist_ok=True)
    solver = read_solver(solver_path)
    if net_path is not None:
        solver.net = str(net_path)
    if max_iter is not None:
        solver.max_iter = int(max_iter)
    if not Path(solver.net).is_file():
        raise FileNotFoundError(f"net prototxt of the solver not found: {solver.net}")
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"initial weights not found: {weights}")
    solver.snapshot_prefix = str(workdir / "snapshot")
    solver.snapshot_after_train = True
    solver_copy = workdir / "solver.prototxt"
    solver_copy.write_text(text_format.MessageToString(solver))

    args = [caffe_tool("caffe"), "train", f"--solver={solver_copy}"]
    device = gpu_device()
    if device is not None:
        args.append(f"--gpu={device}")
    if weights is not None:
        args.append(f"--weights={weights}")
    state = {"iteration": 0, "loss": math.nan}
    tests: dict[str, float] = {}
    bar = tqdm(total=solver.max_iter, desc="train", unit="it", disable=not progress, leave=False)

    def on_line(line: str) -> None:
        match = LOSS_RE.search(line)
        if match:
            iteration, loss = int(match.group(1)), float(match.group(2))
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"loss became {loss} at iteration {iteration} (lower base_lr?); log: {workdir / 'train.log'}"
                )
            bar.update(iteration - state["iteration"])
            bar.set_postfix(loss=f"{loss:.4f}")
            state["iteration"], state["loss"] = iteration, loss
        match = TEST_RE.search(line)
        if match:
            try:
                tests[match.group(1)] = float(match.group(2))
            except ValueError:
                pass

    start = time.monotonic()
    try:
        run_caffe(args, workdir / "train.log", on_line)
    finally:
        bar.close()
    snapshot = workdir / f"snapshot_iter_{solver.max_iter}.caffemodel"
    if not snapshot.is_file():
        raise CaffeCrashed(f"caffe train ended without writing {snapshot}; log: {workdir / 'train.log'}")
    out_caffemodel.parent.mkdir(parents=True, exist_ok=True)
    os.replace(snapshot, out_caffemodel)
    return TrainResult(
        caffemodel=out_caffemodel,
        iterations=solver.max_iter,
        final_loss=state["loss"],
        seconds=time.monotonic() - start,
        log=workdir / "train.log",
        test_outputs=tests,
    )
