"""Accept old-format nets: V0/V1 prototxts and caffemodels, upgraded with Caffe's own tools.

The published VGG-16 files use the V1 format (`layers { type: CONVOLUTION }`). Every pytrim
tool passes its inputs through `current_format`, which detects V0/V1 files, converts them
with Caffe's `upgrade_net_proto_text` / `upgrade_net_proto_binary` into a cache keyed by the
file's SHA-256 (so a 528 MB file is converted once), says that it did, and returns the path
of the current-format file. Current-format files are returned unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pytrim.caffe_env import caffe_tool
from pytrim.caffemodel import Caffemodel
from pytrim.protoutil import read_net


def cache_dir() -> Path:
    root = os.environ.get("PYTRIM_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pytrim"
    return Path(root) / "upgraded"


def is_old_prototxt(path: Path) -> bool:
    """True for a V0/V1 net prototxt (`layers` instead of `layer`)."""
    return len(read_net(path).layers) > 0


def is_old_caffemodel(path: Path) -> bool:
    with Caffemodel(path) as model:
        return model.v1


def _upgrade(path: Path, tool: str, suffix: str, log) -> Path:
    from pytrim.collect import sha256_file

    target = cache_dir() / f"{sha256_file(path)[:16]}-{path.stem}{suffix}"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        result = subprocess.run(
            [caffe_tool(tool), str(path), str(partial)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0 or not partial.is_file():
            partial.unlink(missing_ok=True)
            tail = "\n  ".join(result.stderr.strip().splitlines()[-5:])
            raise ValueError(f"{path}: Caffe's {tool} could not upgrade it:\n  {tail}")
        partial.replace(target)
    log(f"note: {path} is in an old (V0/V1) format; upgraded with Caffe's {tool} to {target}")
    return target


def current_format(path: str | Path | None, kind: str, log=None) -> Path | None:
    """Return `path`, or an upgraded copy if it is a V0/V1 prototxt ("net") or caffemodel ("weights")."""
    if path is None:
        return None
    log = log or (lambda message: print(message, file=sys.stderr))
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{'prototxt' if kind == 'net' else 'caffemodel'} not found: {path}")
    if kind == "net":
        return _upgrade(path, "upgrade_net_proto_text", ".prototxt", log) if is_old_prototxt(path) else path
    if kind == "weights":
        return _upgrade(path, "upgrade_net_proto_binary", ".caffemodel", log) if is_old_caffemodel(path) else path
    raise ValueError(f"unknown kind {kind!r}")
