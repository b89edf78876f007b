"""Files that are never half-written and inputs that are never overwritten.

- `write_atomic`/`write_json`: one file under a temporary name, renamed when complete.
- `together`: several outputs of one step, all renamed only when every one is complete.
- `check_outputs`: refuse an output path that is, contains or lies inside an input.
- `claim_run_folder`/`remove_run_folder`/`FolderLock`: a run's output folder carries pytrim's
  marker (so `--restart` never removes anything else) and a lock (so two runs never share it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pytrim.errors import BadInput, RunLocked

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
    checkout = Path(__file__).resolve().parents[1] / candidate
    return checkout if checkout.exists() else candidate


def partial_name(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


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
    for temporary in temporaries:
        temporary.parent.mkdir(parents=True, exist_ok=True)
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


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_outputs(inputs: dict[str, str | Path | None], outputs: dict[str, str | Path | None]) -> None:
    """Refuse, before anything runs, an output that is, contains or lies inside an input.

    Keys are what the user typed (`--weights`); symlinks are resolved, so a link to an input
    counts as that input.
    """
    for out_name, out in outputs.items():
        if out is None:
            continue
        target = Path(out).resolve()
        for in_name, source in inputs.items():
            if source is None:
                continue
            resolved = Path(source).resolve()
            if _inside(resolved, target) or _inside(target, resolved):
                relation = "is" if resolved == target else "contains" if _inside(resolved, target) else "is inside"
                raise BadInput(f"{out_name} {out} {relation} the input {in_name} {source}: refusing to overwrite it")


def claim_run_folder(folder: Path, kind: str) -> None:
    """Make `folder` a run folder: create it with pytrim's marker, or accept it if it has one.
    A non-empty folder without the marker is not pytrim's: refuse to write into it."""
    marker = folder / MARKER
    if folder.exists() and not marker.is_file():
        if not folder.is_dir():
            raise BadInput(f"{folder} is a file, not an output folder")
        if any(folder.iterdir()):
            raise BadInput(f"{folder} is not empty and is not a pytrim run folder (no {MARKER}): use another --out")
    folder.mkdir(parents=True, exist_ok=True)
    if not marker.is_file():
        write_json(marker, {"kind": kind})


def remove_run_folder(folder: Path) -> None:
    """Remove a run folder for `--restart`: only one that carries pytrim's marker (or is empty)."""
    if not folder.exists():
        return
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        return
    if not (folder / MARKER).is_file():
        raise BadInput(f"--restart: {folder} is not a pytrim run folder (no {MARKER}); nothing was removed")
    with FolderLock(folder):
        shutil.rmtree(folder)


class FolderLock:
    """An exclusive lock on a run folder for the life of a process (released by the kernel even
    after kill -9); the file names the owner's pid for the message of the one refused."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK
        self.handle: Any = None

    def __enter__(self) -> FolderLock:
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
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
