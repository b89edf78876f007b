"""Statistics files (HDF5): what collect measured, with the SHA-256 of the weights it was
measured on, written atomically and read back with every problem naming the file."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.core.errors import BadInput, StatsMismatch
from pytrim.core.files import sha256_file, write_atomic
from pytrim.stats.collect import LayerStats, Point, Stats


def save_stats(stats: Stats, path: str | Path) -> Path:
    """Write statistics to HDF5 (atomically): per group its APoZ, mean, std and, per point,
    the blob and the exact zero counts (layers/<order>/points/<i>; names are attributes,
    since layer names may hold a '/')."""
    import h5py

    buffer = io.BytesIO()  # built in memory, then written by the one atomic writer: a full disk
    with h5py.File(buffer, "w") as handle:  # is one error naming the file (HDF5 itself would crash)
        handle.attrs["weights_sha256"] = stats.weights_sha256
        handle.attrs["seconds"] = stats.seconds
        for key, value in stats.source.items():
            handle.attrs[f"source_{key}"] = value
        for order, layer in enumerate(stats.layers.values()):
            group = handle.create_group(f"layers/{order}")
            group["apoz"] = layer.apoz
            group.attrs.update(name=layer.layer, width=layer.width, N=layer.images, mean=layer.mean, std=layer.std)
            group.attrs.update(relu=layer.relu, members=layer.members, blocks=layer.blocks)
            for i, (owner, part) in enumerate(layer.parts):
                group[f"parts/{i}"] = part
                group[f"parts/{i}"].attrs["layer"] = owner
            for i, p in enumerate(layer.points):
                point = group.create_group(f"points/{i}")
                point["zeros"] = p.zeros
                point.attrs.update(
                    blob=p.blob, offset=p.offset, start=p.start, length=p.length, relu=p.relu, M=p.positions
                )
        for i, (blob, mean) in enumerate(stats.means.items()):
            handle[f"means/{i}"] = mean
            handle[f"means/{i}"].attrs["blob"] = blob
    return write_atomic(path, buffer.getvalue())


def _read_stats(handle: Any) -> Stats:
    layers = {}
    for order in sorted(handle["layers"], key=int):
        g = handle["layers"][order]
        points = []
        for i in sorted(g["points"], key=int):
            a = g["points"][i].attrs
            zeros = np.asarray(g["points"][i]["zeros"], dtype=np.int64)
            points.append(Point(str(a["blob"]), int(a["offset"]), int(a["start"]), int(a["length"]), bool(a["relu"]),
                                zeros, int(a["M"])))  # fmt: skip
        name = str(g.attrs["name"])
        members = [str(m) for m in g.attrs["members"]]
        blocks = int(g.attrs["blocks"])
        parts = [(str(g["parts"][i].attrs["layer"]), np.asarray(g["parts"][i], dtype=np.int64))
                 for i in sorted(g.get("parts", {}), key=int)]  # fmt: skip
        layers[name] = LayerStats(name, int(g.attrs["width"]), int(g.attrs["N"]), points, members, blocks, parts)
    source = {k[len("source_") :]: str(v) for k, v in handle.attrs.items() if k.startswith("source_")}
    means = {str(d.attrs["blob"]): np.asarray(d) for d in handle.get("means", {}).values()}
    return Stats(layers, str(handle.attrs["weights_sha256"]), source, float(handle.attrs["seconds"]), means)


def load_stats(path: str | Path) -> Stats:
    """Read a statistics file written by save_stats; a damaged file is one error naming it."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"statistics file not found: {path}")
    try:
        with h5py.File(path, "r") as handle:
            return _read_stats(handle)
    except (OSError, KeyError, ValueError) as exc:
        raise BadInput(f"{path}: not a readable pytrim statistics file ({exc})") from None


def check_stats_match(stats: Stats, weights: str | Path) -> None:
    """Refuse statistics measured on other weights than `weights`."""
    digest = sha256_file(weights)
    if digest != stats.weights_sha256:
        raise StatsMismatch(
            f"the statistics were measured on {stats.source.get('weights', 'other weights')} "
            f"(sha256 {stats.weights_sha256[:12]}), not on {weights} (sha256 {digest[:12]}): collect them again"
        )
