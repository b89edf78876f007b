"""What the Torch-Pruning side of bench-peers reads, written from pytrim's own readers: a net
as a twin spec (JSON), its weights (npz), the images of an LMDB as arrays (npz), Caffe's own
class scores on them (npz), and the fine-tuning budget of a schedule (JSON).

The torch side (tools/peers/, its own environment) builds a PyTorch twin from the spec and
the weights, so the two environments share files, never imports. The spec is the train_val's
TEST phase between the input and the class scores, one entry per layer with its settings
already read out of Caffe's defaults (kernel, stride and pad as pairs, BatchNorm's eps and
moving-average fraction, pooling's global flag), each learnable blob's lr_mult and
decay_mult as the train_val says, and the layers pytrim never trims (the classifier).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.caffemodel import Caffemodel
from pytrim.caffeio.env import caffe_pb2
from pytrim.caffeio.lmdb import Lmdb
from pytrim.caffeio.netcheck import check_model, load_net
from pytrim.caffeio.proto import layers_in_phase, read_net, read_solver
from pytrim.core.errors import BadInput, UnsupportedTopology
from pytrim.core.files import together, write_json
from pytrim.feeds.image import decode_datum
from pytrim.feeds.source import DATA_LAYERS, batches, data_source
from pytrim.graph.build import net_graph
from pytrim.graph.queries import coverage
from pytrim.stats.cost import macs
from pytrim.stats.evaluate import find_scores

SPEC_VERSION = 1
TWIN_TYPES = ("Convolution", "InnerProduct", "BatchNorm", "Scale", "ReLU", "Pooling", "Eltwise", "Concat", "Dropout")
SKIPPED = ("Accuracy", "SoftmaxWithLoss", "Softmax", "Silence")


def pair(values: Any, single: int, default: int, h: int = 0, w: int = 0) -> list[int]:
    """Caffe's (h, w) of a repeated field or its _h/_w pair (kernel, stride, pad)."""
    if h or w:
        return [int(h), int(w)]
    listed = [int(v) for v in values]
    if not listed:
        listed = [single] if single else [default]
    return listed * 2 if len(listed) == 1 else listed[:2]


def conv_settings(layer: Any) -> dict[str, Any]:
    p = layer.convolution_param
    return {"num_output": int(p.num_output), "kernel": pair(p.kernel_size, 0, 1, p.kernel_h, p.kernel_w),
            "stride": pair(p.stride, 0, 1, p.stride_h, p.stride_w), "pad": pair(p.pad, 0, 0, p.pad_h, p.pad_w),
            "dilation": pair(p.dilation, 0, 1), "group": int(p.group), "bias": bool(p.bias_term)}  # fmt: skip


def pool_settings(layer: Any) -> dict[str, Any]:
    p = layer.pooling_param
    kinds = caffe_pb2().PoolingParameter.PoolMethod
    if kinds.Name(p.pool) not in ("MAX", "AVE"):
        raise UnsupportedTopology(f"the twin has no {kinds.Name(p.pool)} pooling (layer {layer.name!r})")
    return {"pool": kinds.Name(p.pool), "global": bool(p.global_pooling),
            "kernel": pair([], p.kernel_size, 1, p.kernel_h, p.kernel_w),
            "stride": pair([], p.stride, 1, p.stride_h, p.stride_w),
            "pad": pair([], p.pad, 0, p.pad_h, p.pad_w)}  # fmt: skip


def settings(layer: Any) -> dict[str, Any]:
    """The settings the twin needs of one layer, Caffe's defaults filled in."""
    kind = layer.type
    if kind == "Convolution":
        return conv_settings(layer)
    if kind == "Pooling":
        return pool_settings(layer)
    if kind == "InnerProduct":
        p = layer.inner_product_param
        return {"num_output": int(p.num_output), "bias": bool(p.bias_term), "axis": int(p.axis),
                "transpose": bool(p.transpose)}  # fmt: skip
    if kind == "BatchNorm":
        p = layer.batch_norm_param
        return {"eps": float(p.eps), "moving_average_fraction": float(p.moving_average_fraction)}
    if kind == "Scale":
        p = layer.scale_param
        return {"bias": bool(p.bias_term), "axis": int(p.axis), "num_axes": int(p.num_axes)}
    if kind == "ReLU":
        return {"negative_slope": float(layer.relu_param.negative_slope)}
    if kind == "Eltwise":
        p = layer.eltwise_param
        return {"operation": caffe_pb2().EltwiseParameter.EltwiseOp.Name(p.operation), "coeff": list(p.coeff)}
    if kind == "Concat":
        return {"axis": int(layer.concat_param.axis)}
    return {"ratio": float(layer.dropout_param.dropout_ratio)}


def multipliers(layer: Any, blobs: int) -> list[list[float]]:
    """[lr_mult, decay_mult] of each learnable blob (Caffe's default 1, 1; BatchNorm's are 0)."""
    if layer.type == "BatchNorm":
        return [[0.0, 0.0]] * blobs
    specs = list(layer.param)
    return [[float(specs[i].lr_mult), float(specs[i].decay_mult)] if i < len(specs) else [1.0, 1.0]
            for i in range(blobs)]  # fmt: skip


def twin_layers(net: Any, scores: str, model: Caffemodel) -> list[dict[str, Any]]:
    """The TEST-phase layers between the input and the class scores, as the twin builds them."""
    out = []
    for layer in layers_in_phase(net, "TEST"):
        if layer.type in (*DATA_LAYERS, "Input") or layer.type in SKIPPED:
            continue
        if layer.type not in TWIN_TYPES:
            raise UnsupportedTopology(f"the twin has no translation of {layer.type} (layer {layer.name!r})")
        blobs = len(model.layers[layer.name].blobs) if layer.name in model.layers else 0
        out.append({"name": layer.name, "type": layer.type, "bottom": list(layer.bottom), "top": list(layer.top),
                    "settings": settings(layer), "blobs": blobs, "multipliers": multipliers(layer, blobs)})  # fmt: skip
    if not out or scores not in {top for entry in out for top in entry["top"]}:
        raise BadInput(f"no layer of the net writes its class scores {scores!r}")
    return out


def input_of(net: Any) -> dict[str, Any]:
    """The TEST data layer: its image blob, label blob and transform (scale, mean values)."""
    for layer in layers_in_phase(net, "TEST"):
        if layer.type in DATA_LAYERS:
            t = layer.transform_param
            if t.mean_file or t.crop_size or t.mirror:
                raise BadInput(f"the twin takes a transform of scale and mean values only (layer {layer.name!r})")
            return {"blob": layer.top[0], "label": layer.top[1], "scale": float(t.scale) if t.HasField("scale")
                    else 1.0, "mean": [float(v) for v in t.mean_value]}  # fmt: skip
    raise BadInput("the net has no TEST data layer (the twin spec is written from a train_val)")


def write_twin(net_path: Path, weights: Path, out: Path) -> dict[str, Any]:
    """<out>.json (the spec) and <out>.npz (blob i of spec layer j as "L<j>_<i>") of a
    train_val and its caffemodel; the spec also records pytrim's own MACs and parameter count
    (the torch side checks its counts against them) and the blob shapes Caffe builds."""
    net, shapes = read_net(net_path), check_model(net_path, weights)
    source = input_of(net)
    scores = find_scores(net, source["label"])
    _, graph = net_graph(net_path)
    with Caffemodel(weights) as model:
        layers = twin_layers(net, scores or "", model)
        arrays = {f"L{j}_{i}": np.array(a, np.float32) for j, e in enumerate(layers) if e["blobs"]
                  for i, a in enumerate(model.arrays(e["name"]))}  # fmt: skip
        params = model.params()
    spec = {"version": SPEC_VERSION, "name": net.name, "net": str(net_path), "weights": str(weights),
            "input": source | {"shape": shapes.blobs[source["blob"]][1:]}, "output": scores, "layers": layers,
            "ignored": sorted(coverage(graph, net)["refused"]), "macs": macs(net, shapes), "params": params,
            "blobs": {name: shape[1:] for name, shape in shapes.blobs.items()}}  # fmt: skip
    with together([out.with_suffix(".npz")]) as (partial,), partial.open("wb") as handle:
        np.savez(handle, **arrays)
    write_json(out.with_suffix(".json"), spec)
    return spec


def write_images(lmdb: Path, out: Path) -> dict[str, Any]:
    """The images (uint8, N x C x H x W) and labels of an LMDB of Datum records, in Caffe's
    reading order, as <out> (npz: images, labels)."""
    with Lmdb(lmdb) as db:
        records = [decode_datum(v, None, f"{lmdb}: record {i}") for i, v in enumerate(db.values(range(len(db))))]
    images = np.stack([image for image, _ in records])
    if images.dtype != np.uint8:
        raise BadInput(f"{lmdb}: the twin's data are uint8 images, these are {images.dtype}")
    labels = np.array([label for _, label in records], np.int64)
    with together([out]) as (partial,), partial.open("wb") as handle:
        np.savez(handle, images=images, labels=labels)
    return {"path": str(out), "source": str(lmdb), "images": len(labels), "shape": list(images.shape[1:])}


def write_caffe_scores(net_path: Path, weights: Path, out: Path) -> dict[str, Any]:
    """Caffe's class scores (float32, one row per image) and labels on the net's TEST data,
    every image once, as <out> (npz: scores, labels): what the twin must reproduce."""
    net_param = read_net(net_path)
    net, data = load_net(net_path, weights), data_source(net_param)
    blob = find_scores(net_param, data.label_blob)
    rows, labels = [], []
    for take in batches(net, data, "caffe scores", progress=False):
        rows.append(net.blobs[blob].data[:take].reshape(take, -1).copy())
        labels.append(net.blobs[data.label_blob].data[:take].reshape(-1).astype(np.int64))
    scores, labels_all = np.concatenate(rows), np.concatenate(labels)
    with together([out]) as (partial,), partial.open("wb") as handle:
        np.savez(handle, scores=scores, labels=labels_all)
    return {"path": str(out), "images": len(labels_all), "top1": float(np.mean(scores.argmax(1) == labels_all))}


POLICY_FIELDS = ("gamma", "power", "stepsize", "stepvalue")


def budget(solver: Path, net: Path, iterations: int, base_lr: float | None) -> dict[str, Any]:
    """A fine-tuning's budget as Caffe runs it: solver iterations, TRAIN batch, images seen,
    SGD momentum, weight decay, the learning-rate policy and its fields, base_lr."""
    s = read_solver(solver)
    if s.type not in ("", "SGD") or s.solver_type != 0 or s.iter_size != 1 or s.clip_gradients > 0:
        raise BadInput(f"{solver}: the twin replicates plain SGD (momentum, iter_size 1, no gradient clipping)")
    train = [layer for layer in layers_in_phase(read_net(net), "TRAIN") if layer.type == "Data"]
    if len(train) != 1:
        raise BadInput(f"{net}: one TRAIN Data layer expected, found {len(train)}")
    batch = int(train[0].data_param.batch_size)
    policy = {name: (list(getattr(s, name)) if name == "stepvalue" else getattr(s, name)) for name in POLICY_FIELDS}
    return {"iterations": iterations, "batch": batch, "images_seen": iterations * batch, "optimizer": "SGD",
            "momentum": s.momentum, "weight_decay": s.weight_decay, "regularization": s.regularization_type or "L2",
            "lr_policy": s.lr_policy, "base_lr": base_lr or s.base_lr, **policy, "max_iter": iterations,
            "train_source": train[0].data_param.source}  # fmt: skip
