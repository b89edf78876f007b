"""Accept old-format nets: V0/V1 prototxts and caffemodels, upgraded with Caffe's own tools.

The published VGG-16 files use the V1 format (`layers { type: CONVOLUTION }`). Every pytrim
tool passes its inputs through `current_format`, which detects V0/V1 files, converts them
with Caffe's `upgrade_net_proto_text` / `upgrade_net_proto_binary` into a cache keyed by the
file's SHA-256 (so a 528 MB file is converted once), says that it did, and returns the path
of the current-format file. Current-format files are returned unchanged.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from pytrim.caffeio.caffemodel import Caffemodel
from pytrim.caffeio.env import cache_root, caffe_tool
from pytrim.caffeio.proto import read_net
from pytrim.core.errors import BadInput, StepFailed
from pytrim.core.files import sha256_file, together
from pytrim.core.runner import run_child


def cache_dir() -> Path:
    return cache_root() / "upgraded"


def is_old_prototxt(path: Path) -> bool:
    """True for a V0/V1 net prototxt (`layers` instead of `layer`)."""
    return len(read_net(path).layers) > 0


def is_old_caffemodel(path: Path) -> bool:
    with Caffemodel(path) as model:
        return model.v1


def _upgrade(path: Path, tool: str, suffix: str, log: Callable[[str], None]) -> Path:
    target = cache_dir() / f"{sha256_file(path)[:16]}-{path.stem}{suffix}"
    if not target.is_file():
        with tempfile.TemporaryDirectory(prefix="pytrim-upgrade-") as tmp, together([target]) as (partial,):
            try:
                run_child([caffe_tool(tool), str(path), str(partial)], Path(tmp) / "upgrade.log", tool)
            except StepFailed as exc:
                raise BadInput(f"{path}: Caffe's {tool} could not upgrade it: {exc.reason or exc}") from None
    log(f"note: {path} is in an old (V0/V1) format; upgraded with Caffe's {tool} to {target}")
    return target


def current_format(path: str | Path | None, kind: str, log: Callable[[str], None] | None = None) -> Path | None:
    """Return `path`, or an upgraded copy if it is a V0/V1 prototxt ("net") or caffemodel ("weights")."""
    if path is None:
        return None
    log = log or (lambda message: print(message, file=sys.stderr))
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{'prototxt' if kind == 'net' else 'caffemodel'} not found: {path}")
    if kind == "net":
        return _upgrade(path, "upgrade_net_proto_text", ".prototxt", log) if is_old_prototxt(path) else path
    if kind == "weights":
        return _upgrade(path, "upgrade_net_proto_binary", ".caffemodel", log) if is_old_caffemodel(path) else path
    raise ValueError(f"unknown kind {kind!r}")
