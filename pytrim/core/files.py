"""Files that are never half-written and inputs that are never overwritten.

- `write_atomic`/`write_json`: one file under a temporary name, renamed when complete.
- `together`: several outputs of one step, all renamed only when every one is complete.
- `move`: a file moved into place atomically, also across filesystems.
- `check_outputs`: refuse an output path that is, contains or lies inside an input, or lies
  inside an LMDB; `resolved`: a path's symlinks resolved, a loop one error.
- `OutputGuard`: every path a command writes, checked before any work (against its inputs,
  each other, folders that are not pytrim's and folders of other commands), output folders
  claimed and locked while it works, and what a failed command wrote removed.
- `claim_run_folder`/`clear_run_folder`/`FolderLock`: a run's output folder carries pytrim's
  marker naming the command (so `--restart` never removes anything else, and no other command
  writes inside it: `check_not_in_run`, `PYTRIM_RUNS` for the run's own steps) and a lock (so
  two runs never share it).
- `provenance`: the commit (and whether the tree had changes) and the time a result was made.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from pytrim.core.errors import BadInput, RunLocked

MARKER = ".pytrim-run"
LOCK = ".pytrim-lock"


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes (read in blocks: caffemodels can be large)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped(relative: str | Path) -> Path:
    """A file pytrim ships (prototxt/..., schedules): from the current directory if it is there,
    else from the source checkout this package runs from."""
    candidate = Path(relative)
    if candidate.exists():
        return candidate
    checkout = Path(__file__).resolve().parents[2] / candidate  # pytrim/core/files.py -> the checkout
    return checkout if checkout.exists() else candidate


def provenance(checkout: Path | None = None) -> dict[str, Any]:
    """Where a result comes from: the commit of the checkout pytrim runs from (None outside
    git), whether its working tree had uncommitted changes, and the time (UTC)."""
    folder = checkout or Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    changes = git("status", "--porcelain", "--untracked-files=no") if commit else None
    date = datetime.now(UTC).isoformat(timespec="seconds")
    return {"commit": commit, "dirty": bool(changes) if changes is not None else None, "date": date}


def partial_name(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def make_folder(folder: Path, what: str) -> None:
    """Create a folder (and its parents); a file in the way is one error naming it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), folder)
        raise BadInput(f"{what}: {blocking} is a file, not a folder") from None


@contextlib.contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """Give an operating-system error raised while writing `path` that file's name (a failed
    write() does not say which file it was writing)."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


@contextlib.contextmanager
def together(paths: Iterable[str | Path]) -> Iterator[list[Path]]:
    """Yield a temporary path for each output; rename them all when the block succeeds, delete
    them all when it fails. Outputs of one step appear together or not at all."""
    targets = [Path(p) for p in paths]
    temporaries = [partial_name(p) for p in targets]
    for target, temporary in zip(targets, temporaries, strict=True):
        make_folder(target.parent, f"cannot write {target}")
        _remove(temporary)
    try:
        yield temporaries
        missing = [str(t) for t in temporaries if not t.exists()]
        if missing:
            raise RuntimeError(f"outputs not written: {', '.join(missing)}")
    except BaseException:
        for temporary in temporaries:
            _remove(temporary)
        raise
    for temporary, target in zip(temporaries, targets, strict=True):
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(temporary, target)


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write one file under a temporary name, then rename it: never a half-written file."""
    path = Path(path)
    with together([path]) as (temporary,), naming(path):
        temporary.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def write_json(path: str | Path, value: Any) -> Path:
    return write_atomic(path, json.dumps(value, indent=1) + "\n")


def read_json(path: str | Path, what: str = "JSON file", top: type = dict) -> Any:
    """Parse a JSON file whose top level is `top`; every problem names the file."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{what} not found: {path}")
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not a valid {what}: {exc}") from None
    if not isinstance(value, top):
        raise BadInput(f"{path}: not a valid {what}: the top level is a {type(value).__name__}, not a {top.__name__}")
    return value


def move(source: str | Path, target: str | Path) -> Path:
    """Move a file into place atomically: a rename on one filesystem; across filesystems a
    copy into a temporary beside the target, then a rename (the source goes last)."""
    source, target = Path(source), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        with together([target]) as (partial,), naming(target):
            shutil.copyfile(source, partial)
        source.unlink()
    return target


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def resolved(path: str | Path, name: str = "") -> Path:
    """`path` with every symlink resolved; a symlink loop is one error naming the path."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as exc:  # Python 3.11: RuntimeError("Symlink loop from ...")
        if isinstance(exc, OSError) and exc.errno != errno.ELOOP:
            raise
        what = f"{name} {path}" if name else str(path)
        raise BadInput(f"{what}: a symlink loop (a link that points back to itself)") from None


def lmdb_folder(path: Path) -> Path | None:
    """The LMDB folder (it holds data.mdb) that `path` is or lies inside, if any: a user's data
    set is never an output, whether this command reads it or not."""
    for folder in [path, *path.parents]:
        if (folder / "data.mdb").is_file():
            return folder
    return None


Sources = str | Path | list[Path] | None  # an input option's path, or the paths a net reads


def check_outputs(inputs: dict[str, Sources], outputs: dict[str, str | Path | None]) -> None:
    """Refuse, before anything runs, an output that is, contains or lies inside an input, or
    lies inside an LMDB (a user's data set, read by this command or not).

    Keys are what the user typed (`--weights`); symlinks are resolved, so a link to an input
    counts as that input.
    """
    sources = [(name, source, resolved(source, name)) for name, given in inputs.items()
               for source in (given if isinstance(given, list) else [given]) if source is not None]  # fmt: skip
    for out_name, out in outputs.items():
        if out is None:
            continue
        target = resolved(out, out_name)
        for in_name, source, path in sources:
            if _inside(path, target) or _inside(target, path):
                relation = "is" if path == target else "contains" if _inside(path, target) else "is inside"
                raise BadInput(f"{out_name} {out} {relation} the input {in_name} {source}: refusing to overwrite it")
        data = lmdb_folder(target)
        if data is not None:
            raise BadInput(f"{out_name} {out} is inside the LMDB {data} (a data set): refusing to write into it")


def marker_kind(folder: Path) -> str | None:
    """The kind of pytrim run whose marker `folder` carries, or None."""
    marker = folder / MARKER
    if not marker.is_file():
        return None
    try:
        return str(json.loads(marker.read_text()).get("kind", ""))
    except (ValueError, OSError, AttributeError):
        return ""


RUNS_ENV = "PYTRIM_RUNS"  # the run folders of the processes above this one (their steps write inside)


def owning_run(path: Path) -> Path | None:
    """The nearest folder above `path` that carries pytrim's marker: another command's folder."""
    return next((parent for parent in resolved(path).parents if marker_kind(parent) is not None), None)


def our_runs() -> list[Path]:
    """The run folders this process or the runs that started it hold (their steps may write inside)."""
    return [Path(p) for p in os.environ.get(RUNS_ENV, "").split(os.pathsep) if p]


def check_not_in_run(path: Path, name: str) -> None:
    """Refuse an output inside another command's folder (one with pytrim's marker), unless it is
    the folder of the run this process is a step of: a run's folders are written only by that run."""
    owner = owning_run(path)
    if owner is None or any(_inside(owner, run) for run in our_runs()):
        return
    raise BadInput(f"{name} {path} is inside {owner}, a pytrim {marker_kind(owner) or 'run'} folder: only that "
                   "command writes there; use a folder of its own")  # fmt: skip


def check_folder(folder: Path, kind: str, name: str = "--out") -> None:
    """Refuse to write into a folder that is not empty and does not carry this kind of command's
    marker, or that lies inside another command's folder."""
    check_not_in_run(folder, name)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise BadInput(f"{name} {folder} is a file, not an output folder")
    found = marker_kind(folder)
    inside_ours = owning_run(folder) is not None  # a step of our own run (check_not_in_run let it through)
    if found == kind or (found is None and (inside_ours or not any(folder.iterdir()))):
        return
    what = f"a pytrim {found} folder" if found else f"not a pytrim {kind} folder (no {MARKER})"
    raise BadInput(f"{name} {folder} is not empty and is {what}: refusing to write into it; use another folder")


def claim_run_folder(folder: Path, kind: str, name: str = "--out") -> None:
    """Make `folder` a run folder of `kind`: create it with pytrim's marker, or accept it if it
    has that marker (or lies inside the run this process is a step of). Anything else is refused."""
    check_folder(folder, kind, name)
    make_folder(folder, f"cannot make {name} {folder}")
    if marker_kind(folder) is None and owning_run(folder) is None:
        write_json(folder / MARKER, {"kind": kind})


def _state(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


class OutputGuard:
    """Every path one command writes. Before any work: none is, contains or lies inside an
    input or another output, none lies inside another command's folder, and output folders are
    empty or this command's own (pytrim's marker). While it works the folders are claimed and
    locked (its child steps may write inside them: RUNS_ENV). If it fails, the files it wrote
    and the folders it created are removed (a resumable run keeps its folder once it holds more
    than pytrim's marker); a full disk names the outputs."""

    def __init__(self, kind: str, inputs: dict[str, Sources], files: dict[str, Path | None],
                 folders: dict[str, Path | None], keep_folders: bool = False) -> None:  # fmt: skip
        self.kind, self.keep_folders = kind, keep_folders
        self.files = {k: Path(v) for k, v in files.items() if v is not None}
        self.folders = {k: Path(v) for k, v in folders.items() if v is not None}
        check_outputs(inputs, self.files | self.folders)
        self._distinct()
        for name, path in self.files.items():
            check_not_in_run(path, name)
        for name, folder in self.folders.items():
            check_folder(folder, kind, name)
        self.before = {path: _state(path) for path in [*self.files.values(), *self.folders.values()]}
        self.locks: list[FolderLock] = []
        self.runs_env: str | None = None

    def _distinct(self) -> None:
        """No output is, or lies inside, another output of the same command."""
        seen: list[tuple[Path, str, Path]] = []
        for name, path in (self.files | self.folders).items():
            target = resolved(path, name)
            for other, other_name, other_path in seen:
                if target == other:
                    raise BadInput(f"{name} {path} is the same path as {other_name}: give each output its own path")
                pair = [(name, path, target), (other_name, other_path, other)]
                for (inner, inner_path, a), (outer, outer_path, b) in (pair, pair[::-1]):
                    if _inside(a, b):
                        raise BadInput(f"{inner} {inner_path} is inside {outer} {outer_path}, another output of this "
                                       "command: give each output its own path")  # fmt: skip
            seen.append((target, name, path))

    def __enter__(self) -> OutputGuard:
        for name, folder in self.folders.items():
            claim_run_folder(folder, self.kind, name)
            self.locks.append(FolderLock(folder).__enter__())
        if self.folders:
            self.runs_env = os.environ.get(RUNS_ENV)
            ours = [str(resolved(f)) for f in self.folders.values()]
            os.environ[RUNS_ENV] = os.pathsep.join([*filter(None, [self.runs_env]), *ours])
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> None:
        for lock in reversed(self.locks):
            lock.__exit__()
        if self.folders:
            _restore_env(RUNS_ENV, self.runs_env)
        if exc is None:
            return
        for path in self.files.values():
            if _state(path) != self.before[path]:
                _remove(path)
        for folder in self.folders.values():
            bare = folder.is_dir() and {p.name for p in folder.iterdir()} <= {MARKER, LOCK}
            if self.before[folder] is None and (bare or not self.keep_folders):
                _remove(folder)  # a resumable run keeps a folder only when it holds work
        if isinstance(exc, OSError) and exc.errno in FULL and not exc.filename:
            written = ", ".join(str(p) for p in [*self.files.values(), *self.folders.values()])
            raise OSError(exc.errno, exc.strerror, f"writing {written}") from exc


FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # the disk is full: the message names the outputs


def _restore_env(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


def clear_run_folder(folder: Path) -> None:
    """Empty a run folder for `--restart` (its marker and lock stay): only one that carries
    pytrim's marker, which the command holds (pytrim.core.files.OutputGuard)."""
    if not (folder / MARKER).is_file():
        raise BadInput(f"--restart: {folder} is not a pytrim run folder (no {MARKER}); nothing was removed")
    for path in folder.iterdir():
        if path.name not in (MARKER, LOCK):
            _remove(path)


class FolderLock:
    """An exclusive lock on a run folder for the life of a process (released by the kernel even
    after kill -9); the file names the owner's pid for the message of the one refused. The
    process that holds it may take it again (nested: the command's guard, then its loop)."""

    held: ClassVar[dict[Path, int]] = {}

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK
        self.key = resolved(folder)
        self.handle: Any = None

    def __enter__(self) -> FolderLock:
        if self.key in FolderLock.held:
            FolderLock.held[self.key] += 1
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise RunLocked(
                f"{self.path.parent} is in use by another pytrim run (pid {owner}): wait for it or use another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self.handle = handle
        FolderLock.held[self.key] = 1
        return self

    def __exit__(self, *exc: object) -> None:
        FolderLock.held[self.key] -= 1
        if FolderLock.held[self.key] or self.handle is None:
            return
        del FolderLock.held[self.key]
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
