"""Caffe's text protobuf files (nets, solvers) with caffe_pb2 alone (no Net needed).

Caffe aborts the process on a malformed file; these helpers parse in Python first, so bad
input becomes one error naming the file. `layers_in_phase` applies Caffe's include/exclude
rules the way `Net::FilterNet` does, so checks see the layers Caffe will build.
`write_solver` is the one place a solver file is rewritten; `data_sources` lists the files a
net reads, which no command may overwrite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import text_format

from pytrim.caffeio.env import caffe_pb2
from pytrim.core.errors import BadInput
from pytrim.core.files import write_atomic

PARSED: dict[tuple[str, bytes], bytes] = {}  # (message type, file bytes) -> the message, binary
PARSED_LIMIT = 64


def read_text_proto(path: str | Path, message: Any, what: str) -> Any:
    """Parse a text-format file into `message`; errors name the file.

    Text parsing is pure Python (a ResNet-50 prototxt takes 25 ms) and one command reads a
    net several times (checks, graph, data, probe), so a parse is kept, keyed by the file's
    bytes, in protobuf's binary form, which is read back in microseconds."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{what} not found: {path}")
    raw = path.read_bytes()
    key = (message.DESCRIPTOR.full_name, raw)
    if key in PARSED:
        message.MergeFromString(PARSED[key])
        return message
    try:
        text_format.Merge(raw.decode(), message)
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not a valid {what}: {exc}") from None
    if len(PARSED) >= PARSED_LIMIT:
        PARSED.pop(next(iter(PARSED)))
    PARSED[key] = message.SerializeToString()
    return message


def read_net(path: str | Path) -> Any:
    """Parse a net prototxt into a NetParameter."""
    return read_text_proto(path, caffe_pb2().NetParameter(), "prototxt")


def read_solver(path: str | Path) -> Any:
    """Parse a solver prototxt into a SolverParameter."""
    return read_text_proto(path, caffe_pb2().SolverParameter(), "solver file")


def write_text(message: Any, path: str | Path) -> Path:
    """Write a message as prototxt, atomically."""
    return write_atomic(path, text_format.MessageToString(message))


def _meets(rule: Any, phase: int, level: int = 0, stages: tuple[str, ...] = ()) -> bool:
    """Caffe's Net::StateMeetsRule."""
    if rule.HasField("phase") and rule.phase != phase:
        return False
    if rule.HasField("min_level") and level < rule.min_level:
        return False
    if rule.HasField("max_level") and level > rule.max_level:
        return False
    return all(s in stages for s in rule.stage) and not any(s in stages for s in rule.not_stage)


def in_phase(layer: Any, phase: str) -> bool:
    """Whether Caffe builds `layer` in `phase` ("TRAIN" or "TEST"), as Net::FilterNet decides."""
    value = caffe_pb2().Phase.Value(phase)
    if layer.include:
        return any(_meets(rule, value) for rule in layer.include)
    return not any(_meets(rule, value) for rule in layer.exclude)


def layers_in_phase(net: Any, phase: str = "TEST") -> list[Any]:
    return [layer for layer in net.layer if in_phase(layer, phase)]


def set_data_sources(
    net: Any, train: str | Path, test: str | Path, batch: int | None = None, max_batch: int | None = None
) -> Any:
    """Point a net's TRAIN and TEST Data layers at other LMDBs; optionally set or cap the batch."""
    for layer in net.layer:
        if layer.type != "Data":
            continue
        layer.data_param.source = str(test if in_phase(layer, "TEST") else train)
        if batch is not None:
            layer.data_param.batch_size = batch
        if max_batch is not None:
            layer.data_param.batch_size = min(layer.data_param.batch_size, max_batch)
    return net


def with_test_data(net_path: str | Path, source: str | Path, out: str | Path) -> Path:
    """A copy of a train_val whose TEST Data layers read `source` (another LMDB: a sample of
    training images, the validation split)."""
    net = read_net(net_path)
    for layer in net.layer:
        if layer.type == "Data" and in_phase(layer, "TEST"):
            layer.data_param.source = str(source)
    return write_text(net, out)


def write_solver(source: str | Path | None, out: str | Path, **changes: Any) -> Any:
    """Copy a solver file (or, with no source, an empty solver) with fields changed (net,
    max_iter, base_lr, snapshot_prefix, ...; `clear` lists fields to clear, `solver_mode`
    is "CPU" or "GPU"); a value of None leaves the field as it is. Returns the new
    SolverParameter."""
    solver = read_solver(source) if source is not None else caffe_pb2().SolverParameter()
    for name, value in changes.items():
        if value is None:
            continue
        if name == "clear":
            for field_name in value:
                solver.ClearField(field_name)
        elif name == "solver_mode":
            solver.solver_mode = getattr(solver, value)
        elif isinstance(value, list):
            field_value = getattr(solver, name)
            del field_value[:]
            field_value.extend(value)
        else:
            setattr(solver, name, value)
    write_text(solver, out)
    return solver


def listed_folders(list_file: Path, root: str | Path | None = None) -> list[Path]:
    """The folders of the images an image list ('path label' lines) names, relative to `root`."""
    return list(dict.fromkeys(path.parent for path in _listed(list_file, str(root or ""))))


def _listed(list_file: Path, root: str = "", column: int = 0) -> list[Path]:
    """The files a list file names (one per line, in `column`), relative to `root`."""
    if not list_file.is_file():
        return []
    names = [line.split()[column] for line in list_file.read_text(errors="replace").splitlines() if line.split()]
    return [Path(root) / name if root else Path(name) for name in names]


def data_sources(net: Any) -> list[Path]:
    """Every file and folder a net reads data from, in any phase: LMDB folders, image lists
    and the images' folder, HDF5 lists and the files they name, mean files."""
    found: list[Path] = []
    for layer in net.layer:
        if layer.transform_param.mean_file:
            found.append(Path(layer.transform_param.mean_file))
        if layer.type == "Data":
            found.append(Path(layer.data_param.source))
        elif layer.type == "ImageData":
            p = layer.image_data_param
            found.append(Path(p.source))
            found += [path.parent for path in _listed(Path(p.source), p.root_folder)]
        elif layer.type in ("HDF5Data", "WindowData"):
            p = layer.hdf5_data_param if layer.type == "HDF5Data" else layer.window_data_param
            found.append(Path(p.source))
            found += _listed(Path(p.source)) if layer.type == "HDF5Data" else []
    return list(dict.fromkeys(found))


# Layers that read labels: a deploy net (and an exported model) has none of them.
LABELLED = (
    "SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss", "InfogainLoss",
    "MultinomialLogisticLoss", "ContrastiveLoss", "Accuracy",
)  # fmt: skip
INPUT_LAYERS = ("Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "Input", "DummyData")


def input_net(net: Any, shapes: dict[str, list[int]], batch: int | None = None, labels: bool = True) -> Any:
    """The TEST phase of `net` with every data layer (and the old `input:` fields) replaced
    by an Input layer of the same tops and shapes (`shapes`: blob -> shape, as Caffe builds
    the net; `batch` replaces the first dimension): the net as pytrim feeds it (shards, timing).
    Without `labels`, the layers that read labels (losses, Accuracy) are left out, and so are
    the inputs nothing else reads: the net as it is deployed."""
    out = caffe_pb2().NetParameter()
    out.CopyFrom(net)
    del out.layer[:], out.input[:], out.input_shape[:], out.input_dim[:]
    layers = [caffe_pb2().LayerParameter(name="input", type="Input", top=list(net.input))] if net.input else []
    layers += [layer for layer in layers_in_phase(net, "TEST") if labels or layer.type not in LABELLED]
    read = {bottom for layer in layers for bottom in layer.bottom}
    for layer in layers:
        if layer.type not in INPUT_LAYERS:
            out.layer.add().CopyFrom(layer)
            continue
        tops = [top for top in layer.top if labels or top in read]
        if not tops:
            continue
        replacement = out.layer.add(name=layer.name, type="Input", top=tops)
        for top in tops:
            dims = [int(d) for d in shapes[top]]
            replacement.input_param.shape.add(dim=[batch or dims[0], *dims[1:]])
    return out
