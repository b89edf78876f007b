"""Check a net, its data and its weights before Caffe sees them; build it only when they fit.

Caffe ends the process on a failed CHECK (a bottom no layer produces, `num_output: 0`, a
kernel larger than its input, weights of another shape, an empty database). So:
1. in Python, from the prototxt: every bottom is produced by an earlier layer of the phase,
   every data source exists, is readable and not empty, and its records have one size;
2. in a child process (`python -m pytrim probe`), Caffe builds the net with constant
   fillers and reports every blob and parameter shape; an abort there becomes one error
   naming the prototxt and Caffe's reason; results are cached by content;
3. in Python, every parameter blob of the caffemodel is compared with those shapes (all of
   them, not only num_output), and a layer stored twice is refused;
only then is the net built in this process and the weights copied in.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.caffemodel import Caffemodel
from pytrim.caffeio.env import cache_root, caffe_pb2, load_caffe
from pytrim.caffeio.lmdb import entries, sample_shapes
from pytrim.caffeio.proto import layers_in_phase, read_net, write_text
from pytrim.core.errors import BadInput, ModelMismatch, StepFailed, few
from pytrim.core.files import read_json, write_json
from pytrim.core.runner import run_step

PROBE_VERSION = 1


@dataclass
class NetShapes:
    """What Caffe built from a prototxt: blob shapes, parameter shapes per layer, layer order."""

    blobs: dict[str, list[int]]
    params: dict[str, list[list[int]]]
    layers: list[str]


def check_bottoms(net: Any, path: str | Path, phase: str) -> None:
    """Every bottom of a layer is a top of an earlier layer (or a net input) in `phase`."""
    available = set(net.input)
    for layer in layers_in_phase(net, phase):
        missing = [b for b in layer.bottom if b not in available]
        if missing:
            raise BadInput(f"{path}: layer {layer.name!r} reads blob {missing[0]!r}, which no earlier layer produces")
        available.update(layer.top)


def _check_lmdb(layer: Any, path: str | Path) -> None:
    source = Path(layer.data_param.source)
    if layer.data_param.backend != caffe_pb2().DataParameter.LMDB:
        raise BadInput(f"{path}: Data layer {layer.name!r} uses LevelDB (the default backend): set backend: LMDB")
    if not source.is_dir():
        raise BadInput(f"{path}: the data source {source} of layer {layer.name!r} does not exist")
    if entries(source) == 0:
        raise BadInput(f"{path}: the data source {source} of layer {layer.name!r} is empty")
    sizes = {shape for shape in sample_shapes(source).values() if shape is not None}
    if len(sizes) > 1:
        listed = ", ".join("x".join(map(str, s)) for s in sorted(sizes))
        raise BadInput(f"{source}: records of different sizes ({listed}); Caffe's Data layer needs one size")


def check_data_sources(net: Any, path: str | Path, phase: str) -> None:
    """Data sources of `phase` exist, can be read and are not empty."""
    for layer in layers_in_phase(net, phase):
        if layer.type == "Data":
            _check_lmdb(layer, path)
        elif layer.type in ("ImageData", "HDF5Data", "WindowData"):
            param = {"ImageData": "image_data_param", "HDF5Data": "hdf5_data_param", "WindowData": "window_data_param"}
            source = Path(getattr(layer, param[layer.type]).source)
            if not source.is_file() or source.stat().st_size == 0:
                raise BadInput(f"{path}: the list file {source} of layer {layer.name!r} is missing or empty")


ALLOW_PYTHON = "PYTRIM_ALLOW_PYTHON_LAYERS"  # set by --allow-python-layers; children inherit it
_noticed: set[tuple[str, str]] = set()


def python_modules(net: Any) -> list[tuple[str, str, str]]:
    """(layer, module, where it is found) of every Python layer, in any phase, found as
    Caffe's embedded interpreter finds it (this process's sys.path: the current folder first,
    then PYTHONPATH); a module that is not found is one error. Nothing is imported (a dotted
    name is located by its top package)."""
    found = []
    for layer in net.layer:
        if layer.type != "Python":
            continue
        module = layer.python_param.module
        top = module.split(".")[0]
        spec = importlib.util.find_spec(top) if top else None
        if spec is None:
            raise BadInput(f"layer {layer.name!r} is a Python layer whose module {module!r} is not found (not in "
                           "the current folder, on PYTHONPATH or installed)")  # fmt: skip
        found.append((layer.name, module, str(spec.origin or (spec.submodule_search_locations or ["?"])[0])))
    return found


def check_python_layers(net: Any, path: str | Path) -> None:
    """Before Caffe builds a net with Python layers: say which modules it imports and from
    where; without --allow-python-layers (PYTRIM_ALLOW_PYTHON_LAYERS=1) that is an error, since
    importing a module runs its code."""
    modules = python_modules(net)
    if not modules:
        return
    listed = few(f"layer {layer!r} imports {module!r} from {where}" for layer, module, where in modules)
    if os.environ.get(ALLOW_PYTHON) != "1":
        raise BadInput(f"{path} has Python layers: building it runs their code ({listed}); pass "
                       "--allow-python-layers to run it")  # fmt: skip
    if (str(path), listed) not in _noticed:
        _noticed.add((str(path), listed))
        print(f"note: {path}: Python layers run code: {listed}", file=sys.stderr)


def import_python_layers(net: Any, path: str | Path) -> None:
    """Import the modules of a net's Python layers (allowed: check_python_layers) so that one
    that fails is one error with its reason, not Caffe's SystemError."""
    for layer, module, where in python_modules(net):
        try:
            importlib.import_module(module)
        except Exception as exc:  # any error the user's module raises while it is imported
            raise BadInput(f"{path}: layer {layer!r}: its Python module {module!r} ({where}) fails to import: "
                           f"{type(exc).__name__}: {exc}") from None  # fmt: skip


def _constant_fillers(message: Any) -> None:
    """Set every FillerParameter in `message` to constant: the probe needs shapes, not values."""
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        items = value if descriptor.label == descriptor.LABEL_REPEATED else [value]
        for item in items:
            if descriptor.message_type.name == "FillerParameter":
                item.Clear()
                item.type = "constant"
            else:
                _constant_fillers(item)


def _probe_key(net: Any, path: Path, phase: str) -> str:
    """Content of the prototxt, the phase, and the identity of every data source it reads."""
    digest = hashlib.sha256(f"{PROBE_VERSION} {phase} ".encode() + path.read_bytes())
    for layer in layers_in_phase(net, phase):
        if layer.type == "Data":
            data = Path(layer.data_param.source) / "data.mdb"
            stat = data.stat()
            digest.update(f"{data.resolve()} {stat.st_size} {stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def probe(path: str | Path, phase: str = "TEST") -> NetShapes:
    """Blob and parameter shapes of the net as Caffe builds it, after the Python checks."""
    path = Path(path)
    net = read_net(path)
    check_bottoms(net, path, phase)
    check_data_sources(net, path, phase)
    check_python_layers(net, path)
    key = _probe_key(net, path, phase)
    cached = cache_root() / "probe" / f"{key}.json"
    if not cached.is_file():
        _constant_fillers(net)
        log = cache_root() / "probe" / f"{key}.log"  # kept: a failure's message names it
        with tempfile.TemporaryDirectory(prefix="pytrim-probe-") as tmp:
            copy = write_text(net, Path(tmp) / path.name)
            try:
                done = run_step("probe", ["--net", str(copy), "--phase", phase], log)
            except StepFailed as exc:
                reason = (exc.reason or str(exc).splitlines()[-1].strip()).replace(f"{copy}: ", "")
                raise BadInput(f"{path}: Caffe cannot build this net ({phase} phase): {reason} (log: {log})") from None
        write_json(cached, done.result)
    return NetShapes(**read_json(cached, "probe cache"))


def shapes_of(net: Any) -> dict[str, Any]:
    """A pycaffe Net's blob and parameter shapes (what `probe` reports; no data is allocated)."""
    return {
        "blobs": {name: list(blob.shape) for name, blob in net.blobs.items()},
        "params": {name: [list(b.shape) for b in blobs] for name, blobs in net.params.items()},
        "layers": list(net._layer_names),
    }


def _blob_fits(want: list[int], have: tuple[int, ...]) -> bool:
    """Caffe accepts a legacy 4-d shape (num, channels, height, width) of the same count."""
    if tuple(want) == tuple(have):
        return True
    return len(have) == 4 and len(want) < 4 and int(np.prod(want)) == int(np.prod(have))


def check_weights(shapes: NetShapes, model: Caffemodel, net_name: str) -> None:
    """Every learnable layer gets weights of exactly its shapes from `model`, stored once."""
    problems = [f"{name}: stored {model.copies[name]} times (concatenated files?)" for name in model.duplicates]
    for name, params in shapes.params.items():
        if name not in model.layers:
            problems.append(f"{name}: in {net_name} but has no weights in {model.path}")
            continue
        blobs = model.layers[name].blobs
        if len(blobs) != len(params):
            problems.append(f"{name}: {len(params)} blobs in {net_name}, {len(blobs)} in {model.path}")
            continue
        for index, (want, blob) in enumerate(zip(params, blobs, strict=True)):
            if not _blob_fits(want, blob.shape):
                problems.append(f"{name} blob {index}: shape {tuple(want)} in {net_name}, {blob.shape} in {model.path}")
    if problems:
        inputs = {b: s for b, s in shapes.blobs.items() if b in ("data",)}
        hint = f" (the net's input: {', '.join(f'{b} {tuple(s)}' for b, s in inputs.items())})" if inputs else ""
        raise ModelMismatch(f"{model.path} does not match {net_name}{hint}: " + few(problems, "; "))


def check_model(net_path: str | Path, weights: str | Path, phase: str = "TEST") -> NetShapes:
    """Probe the net and check the caffemodel against it; return the shapes."""
    shapes = probe(net_path, phase)
    with Caffemodel(weights) as model:
        check_weights(shapes, model, str(net_path))
    return shapes


def load_net(net_path: str | Path, weights: str | Path | None, phase: str = "TEST") -> Any:
    """A pycaffe Net (with `weights`, if given), built only after every check has passed."""
    if weights is None:
        probe(net_path, phase)
    else:
        check_model(net_path, weights, phase)
    caffe = load_caffe()
    net = caffe.Net(str(net_path), getattr(caffe, phase))
    if weights is not None:
        net.copy_from(str(weights))
    return net


def probe_main_result(net_path: str, phase: str) -> dict[str, Any]:
    """The probe child's work: build the net in this process and report its shapes."""
    net = read_net(net_path)
    check_python_layers(net, net_path)
    import_python_layers(net, net_path)
    caffe = load_caffe()
    return shapes_of(caffe.Net(net_path, getattr(caffe, phase)))
