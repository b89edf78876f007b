"""Train or fine-tune a net with Caffe's own solver, run as a child process.

Caffe ends the whole process on a failed CHECK and has crashed outright on runs that
diverged to NaN, so the solver runs as `caffe train` through pytrim.core.runner: its log is
kept, a crash becomes a `CaffeCrashed` error naming the log, and a NaN or infinite loss
stops the child before Caffe does (`TrainingDiverged`). The child runs with one BLAS thread
and pinned kernels (pytrim.caffeio.env.blas_env): a second thread gains nothing here, and the
same kernels give the same weights on other machines. Fine-tuning starts from a caffemodel
(`--weights`), never from the solverstate of another net, whose history blobs may have other
shapes; a run may continue its own solverstate (`resume`). With `snapshot_every`, every
snapshot Caffe writes is handed to `on_snapshot` as it appears, which may end the run there
(early stopping). Solver files are rewritten by pytrim.caffeio.proto.write_solver.
"""

from __future__ import annotations

import math
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytrim.caffeio.caffemodel import Caffemodel
from pytrim.caffeio.env import blas_env, caffe_child_env, caffe_tool, gpu_flag
from pytrim.caffeio.proto import read_solver, write_solver
from pytrim.core.errors import BadInput, CaffeCrashed, TrainingDiverged
from pytrim.core.files import move, together
from pytrim.core.runner import run_child

LOSS_RE = re.compile(r"Iteration (\d+).*?, loss = (\S+)")
SNAPSHOT_RE = re.compile(r"Snapshotting solver state to binary proto file (\S+_iter_(\d+))\.solverstate")
TEST_RE = re.compile(r"Iteration (\d+), Testing net|Test net output #\d+: (\S+) = (\S+)")


@dataclass
class TrainResult:
    """What a finished training run produced; `tests` are the solver's periodic test outputs
    ({iteration: {output: value}}, when the solver has test_interval)."""

    caffemodel: Path
    iterations: int
    final_loss: float
    seconds: float
    log: Path
    tests: dict[int, dict[str, float]] = field(default_factory=dict)
    stopped_at: int | None = None  # the iteration `on_snapshot` ended the run at
    snapshots: list[Path] = field(default_factory=list)  # every snapshot written, in order


class StopTraining(Exception):
    """Raised (through `on_snapshot`'s verdict) to end a training run at a snapshot."""


OnSnapshot = Callable[[int, Path], bool]  # (iteration, caffemodel) -> whether to stop there


class LogWatcher:
    """Reads `caffe train` output as it comes: drives a progress bar, records test outputs,
    and stops the child (by raising) when the loss is not finite."""

    def __init__(self, total: int, progress: bool, log: Path, on_snapshot: OnSnapshot | None = None,
                 start: int = 0) -> None:  # fmt: skip
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=start, desc="train", unit="it", disable=not progress, leave=False)
        self.iteration, self.loss, self.log = start, math.nan, log
        self.tests: dict[int, dict[str, float]] = {}
        self.testing_at = 0
        self.on_snapshot, self.snapshots, self.stopped_at = on_snapshot, [], None

    def snapshot(self, line: str) -> None:
        """A complete snapshot (its solverstate follows the caffemodel): hand it on; stop there if told."""
        match = SNAPSHOT_RE.search(line)
        if match:
            path, iteration = Path(match.group(1) + ".caffemodel"), int(match.group(2))
            self.snapshots.append(path)
            if self.on_snapshot is not None and self.on_snapshot(iteration, path):
                self.stopped_at = iteration
                raise StopTraining(f"stopped at iteration {iteration}")

    def __call__(self, line: str) -> None:
        self.snapshot(line)
        match = LOSS_RE.search(line)
        if match:
            iteration, loss = int(match.group(1)), float(match.group(2))
            if not math.isfinite(loss):
                raise TrainingDiverged(f"loss became {loss} at iteration {iteration} (lower base_lr?); log: {self.log}")
            self.bar.update(iteration - self.iteration)
            self.bar.set_postfix(loss=f"{loss:.4f}")
            self.iteration, self.loss = iteration, loss
        match = TEST_RE.search(line)
        if match and match.group(1):
            self.testing_at = int(match.group(1))
        elif match:
            try:
                self.tests.setdefault(self.testing_at, {})[match.group(2)] = float(match.group(3))
            except ValueError:
                pass


def train(
    solver_path: str | Path,
    out_caffemodel: str | Path,
    weights: str | Path | None = None,
    workdir: str | Path | None = None,
    max_iter: int | None = None,
    net_path: str | Path | None = None,
    progress: bool = True,
    snapshot_every: int = 0,
    on_snapshot: OnSnapshot | None = None,
    resume: Path | None = None,
    **solver_changes: Any,
) -> TrainResult:
    """Run `caffe train` on a copy of the solver (snapshots in `workdir`; another net, budget
    or other fields if given) and move the final weights to `out_caffemodel`. With
    `snapshot_every`, `on_snapshot` sees every snapshot and may stop the run there: then the
    weights are that snapshot's, and nothing is moved (the caller chooses). `resume` continues
    this run's own solverstate (an extended retraining)."""
    gpu = gpu_flag()  # a GPU that does not exist fails here, before anything is written
    out_caffemodel = Path(out_caffemodel)
    workdir = Path(workdir) if workdir else out_caffemodel.with_suffix(".train")
    workdir.mkdir(parents=True, exist_ok=True)
    solver = write_solver(solver_path, workdir / "solver.prototxt", net=str(net_path) if net_path else None,
                          max_iter=max_iter, snapshot_prefix=str(workdir / "snapshot"), snapshot_after_train=True,
                          snapshot=snapshot_every or None, **solver_changes)  # fmt: skip
    if not Path(solver.net).is_file():
        raise BadInput(f"net prototxt of the solver not found: {solver.net}")
    if weights is not None and not Path(weights).is_file():
        raise BadInput(f"initial weights not found: {weights}")
    args = [caffe_tool("caffe"), "train", f"--solver={workdir / 'solver.prototxt'}", *gpu]
    args += [f"--snapshot={resume}"] if resume else [f"--weights={weights}"] if weights is not None else []
    start_at = int(re.search(r"_iter_(\d+)", resume.name).group(1)) if resume else 0
    log = workdir / ("train.log" if resume is None else f"train-from-{start_at}.log")
    watcher = LogWatcher(solver.max_iter, progress, log, on_snapshot, start_at)
    start = time.monotonic()
    try:
        run_child(args, log, "caffe train", on_line=watcher, env=caffe_child_env() | blas_env(1), error=CaffeCrashed)
    except StopTraining:
        pass
    finally:
        watcher.bar.close()
    seconds = time.monotonic() - start
    if watcher.stopped_at is not None:
        return TrainResult(watcher.snapshots[-1], watcher.stopped_at, watcher.loss, seconds, log, watcher.tests,
                           watcher.stopped_at, watcher.snapshots)  # fmt: skip
    final = final_snapshot(workdir, solver.max_iter)
    if on_snapshot is None:
        move(final, out_caffemodel)
        final = out_caffemodel
    return TrainResult(final, solver.max_iter, watcher.loss, seconds, log, watcher.tests, None, watcher.snapshots)


def final_snapshot(workdir: Path, iterations: int) -> Path:
    """The snapshot `caffe train` wrote at the end, checked whole (a full disk leaves a
    truncated one, which is removed and never moved into place)."""
    snapshot = workdir / f"snapshot_iter_{iterations}.caffemodel"
    if not snapshot.is_file():
        raise CaffeCrashed(f"caffe train ended without writing {snapshot}; log: {workdir / 'train.log'}")
    try:
        Caffemodel(snapshot).close()
    except BadInput as exc:
        snapshot.unlink(missing_ok=True)
        raise CaffeCrashed(f"caffe train wrote a damaged snapshot ({exc}); is {workdir} out of space?") from None
    return snapshot


def init_weights(solver_path: str | Path, out: str | Path, net_path: str | Path | None = None) -> Path:
    """The net's initial weights as its fillers draw them with the solver's random_seed (in
    a child process): training from them (`--weights`) makes them the run's exact start,
    which rewinding (NN Relief) needs."""
    solver = read_solver(solver_path)
    net = str(net_path or solver.net)
    seed = solver.random_seed if solver.HasField("random_seed") else 1701
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="pytrim-init-") as tmp, together([out]) as (partial,):
        code = (
            "from pytrim.caffeio.env import load_caffe\n"
            f"caffe = load_caffe(); caffe.set_random_seed({seed})\n"
            f"caffe.Net({net!r}, caffe.TRAIN).save({str(partial)!r})\n"
        )
        run_child([sys.executable, "-c", code], Path(tmp) / "init.log", "initial weights")
    return out


def train_baseline(solver: str | Path, out: str | Path, net: str | Path | None = None, log: Any = print) -> Path:
    """A baseline trained from its saved initial weights (<out>.init.caffemodel), if `out`
    does not exist yet."""
    out = Path(out)
    if not out.is_file():
        log(f"training the baseline {out} with {solver}")
        init = init_weights(solver, out.with_suffix(".init.caffemodel"), net)
        train(solver, out, init, net_path=net, progress=False)
    return out
