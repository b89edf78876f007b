"""A run's memory of its finished steps (state.json), keyed so that it cannot go stale.

Every step's record carries a key computed from everything that determines its output: the
SHA-256 of its input files, the identity of the data it reads, its settings and its
version in pytrim. On a rerun a step is reused only when its key is unchanged and its
output files exist; otherwise it runs again (and says why), and the steps after it see
new input files, so their keys change too: a run recomputes from the first change on.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytrim.caffeio.proto import read_net
from pytrim.core.errors import BadInput, RunDamaged, few
from pytrim.core.files import read_json, sha256_file, write_json

STATE_VERSION = 3  # 3: an iteration has tries (record "try"), the run lists its own ("tried")
# Raise a step's number when a change to pytrim changes what that step produces.
STEP_VERSIONS = {
    "train": 1,
    "evaluate": 4,
    "collect": 2,
    "select": 2,
    "cut": 2,
    "verify": 2,
    "retrain": 1,
    "speed": 3,  # 3: per runtime (Caffe, OpenCV, ONNX Runtime), one thread and every core
    "export": 2,
}
_digests: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """SHA-256 of a file, remembered for this process while its size and mtime are unchanged."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        _digests[key] = sha256_file(path)
    return _digests[key]


def data_identity(net_path: Path) -> list[str]:
    """The LMDBs a prototxt reads, as path, size and modification time (hashing a whole
    ImageNet database on every step would cost minutes)."""
    found = []
    try:
        net = read_net(net_path)
    except BadInput:  # a solver file: its net is an input of its own
        return found
    for layer in net.layer:
        if layer.type == "Data":
            mdb = Path(layer.data_param.source) / "data.mdb"
            if mdb.is_file():
                stat = mdb.stat()
                found.append(f"{mdb.resolve()} {stat.st_size} {stat.st_mtime_ns}")
    return found


def step_key(step: str, settings: dict[str, Any], inputs: dict[str, Path | None]) -> str:
    """The key of a step: its name and version, its settings, and its input files' contents
    (and, for prototxts, the data they read)."""
    material: dict[str, Any] = {"step": step, "version": STEP_VERSIONS[step], "settings": settings}
    for role, path in sorted(inputs.items()):
        if path is None:
            material[role] = None
            continue
        material[role] = file_digest(path)
        if path.suffix == ".prototxt":
            material[role + ".data"] = data_identity(path)
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def _records(value: Any) -> list[dict[str, Any]]:
    """Every record holding steps in a run's state (baseline, tries, final, scratch)."""
    if isinstance(value, list):
        return [r for item in value for r in _records(item)]
    if not isinstance(value, dict):
        return []
    return ([value] if "steps" in value else []) + [r for k, v in value.items() if k != "steps" for r in _records(v)]


class RunState:
    """state.json of one run folder: baseline, iterations and scratch records of keyed steps."""

    def __init__(self, folder: Path, log: Callable[[str], None] = print) -> None:
        self.path = folder / "state.json"
        self.log = log
        self.lock = threading.RLock()  # steps running side by side record under it
        self.data: dict[str, Any] = {"version": STATE_VERSION, "baseline": {}, "iterations": [], "scratch": {}}
        if self.path.is_file():
            loaded = read_json(self.path, "run state")
            if loaded.get("version") != STATE_VERSION:
                raise BadInput(f"{self.path} was written by another pytrim version: start over with --restart")
            self.data = loaded

    @property
    def resumed(self) -> bool:
        return bool(self.data["baseline"] or self.data["iterations"])

    def save(self) -> None:
        with self.lock:
            write_json(self.path, self.data)

    def attempt(self, number: int, letter: str = "a") -> dict[str, Any]:
        """The record of try `letter` of iteration `number` (created empty the first time)."""
        for record in self.data["iterations"]:
            if record["iteration"] == number and record.get("try", "a") == letter:
                return record
        record = {"iteration": number, "try": letter}
        self.data["iterations"].append(record)
        return record

    def tried(self) -> list[dict[str, Any]]:
        """The records of this run's tries, in the order they were made (records of an earlier,
        longer or other run stay in the state for resuming, but are not this run's)."""
        return [self.attempt(number, letter) for number, letter in self.data.get("tried", [])]

    def reuse(self, record: dict[str, Any], name: str, key: str, outputs: list[Path] = (), label: str = "") -> Any:
        """The recorded result of step `name` when its key matches and its outputs exist, else
        None (saying so when an earlier result is outdated)."""
        entry = record.get("steps", {}).get(name)
        if entry and entry["key"] == key and all(Path(p).exists() for p in outputs):
            return entry["result"]
        if entry:
            self.log(f"{label or name}: its inputs or settings changed since the last run; computing it again")
        return None

    def changed(self) -> list[str]:
        """The files finished steps wrote (their SHA-256 recorded) that differ now: changed from
        outside the run (a user's replacement propagates; a run that fails on one says so)."""
        found = []
        for record in _records(self.data):
            for entry in record.get("steps", {}).values():
                for path, digest in entry.get("outputs", {}).items():
                    if Path(path).is_file() and file_digest(Path(path)) != digest:
                        found.append(path)
        return list(dict.fromkeys(found))

    def damaged(self, failure: Exception) -> RunDamaged | None:
        """A failure of this run explained by files changed from outside (named, with --restart)."""
        changed = self.changed()
        if not changed:
            return None
        reason = str(failure).splitlines()[0]
        return RunDamaged(f"{few(changed)} changed after this run wrote {'them' if len(changed) > 1 else 'it'}, and "
                          f"the run fails on it ({reason}): run the same command with --restart to start "
                          f"{self.path.parent} over")  # fmt: skip

    def keep(self, record: dict[str, Any], name: str, key: str, result: dict[str, Any], seconds: float,
             outputs: list[Path] = ()) -> None:  # type: ignore[assignment]  # fmt: skip
        """Record a finished step and the SHA-256 of its output files (saved after every step)."""
        digests = {str(p): file_digest(Path(p)) for p in outputs if Path(p).is_file()}
        with self.lock:
            entry = {"key": key, "result": result, "seconds": round(seconds, 2)}
            record.setdefault("steps", {})[name] = entry | ({"outputs": digests} if digests else {})
            self.save()

    def step(
        self,
        record: dict[str, Any],
        name: str,
        key: str,
        run: Callable[[], dict[str, Any]],
        outputs: list[Path] = (),  # type: ignore[assignment]
        label: str = "",
    ) -> dict[str, Any]:
        """The result of step `name`: reused when its key matches and its outputs exist, else
        computed by `run()` and recorded."""
        found = self.reuse(record, name, key, outputs, label)
        if found is not None:
            return found
        start = time.monotonic()
        result = run()
        self.keep(record, name, key, result, time.monotonic() - start, outputs)
        return result
