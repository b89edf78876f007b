"""A PyTorch twin of a Caffe net, built from pytrim's twin spec (JSON) and weights (npz).

Standard torch modules only, so that Torch-Pruning's dependency graph knows every one of
them: Convolution -> nn.Conv2d (groups and depthwise included), BatchNorm + the Scale after
it -> one nn.BatchNorm2d (affine: Scale's gamma and beta; running mean and variance =
Caffe's stored sums / the scale factor blobs[2], 0 meaning 0; momentum = 1 - Caffe's
moving_average_fraction, which is Caffe's update once blobs[2] has settled at
1 / (1 - fraction)), ReLU -> nn.ReLU / nn.LeakyReLU, Pooling -> nn.MaxPool2d /
nn.AvgPool2d with ceil_mode (Caffe rounds up and drops a last window that starts in the
padding, as ceil_mode does) and count_include_pad (PyTorch divides by the window clipped to
the padded input, as Caffe does), global pooling -> adaptive pooling to 1x1, InnerProduct ->
a flatten from its axis and nn.Linear, Eltwise -> a sum (with coefficients), product or
maximum, Concat -> torch.cat, Dropout -> nn.Dropout. The forward walks the spec's layers in
Caffe's order over a dictionary of blobs, so in-place layers rebind a blob as Caffe
overwrites it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class Eltwise(nn.Module):
    """Caffe's Eltwise: SUM (with coefficients), PROD or MAX of its inputs."""

    def __init__(self, operation: str, coeff: list[float]) -> None:
        super().__init__()
        self.operation, self.coeff = operation, list(coeff)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.operation == "SUM":
            terms = [x if not self.coeff or self.coeff[i] == 1 else x * self.coeff[i] for i, x in enumerate(inputs)]
            out = terms[0]
            for term in terms[1:]:
                out = out + term
            return out
        out = inputs[0]
        for x in inputs[1:]:
            out = out * x if self.operation == "PROD" else torch.maximum(out, x)
        return out


class Concat(nn.Module):
    """Caffe's Concat along an axis."""

    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat(inputs, dim=self.axis)


class FlattenLinear(nn.Module):
    """Caffe's InnerProduct: everything from `axis` on flattened, then nn.Linear."""

    def __init__(self, features: int, outputs: int, bias: bool, axis: int) -> None:
        super().__init__()
        self.axis = axis
        self.linear = nn.Linear(features, outputs, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(x, self.axis))


def key(name: str) -> str:
    """A module name for a Caffe layer name ('conv1/bn' -> 'conv1_bn')."""
    return re.sub(r"\W", "_", name)


def pooling(s: dict[str, Any]) -> nn.Module:
    if s["global"]:
        return nn.AdaptiveMaxPool2d(1) if s["pool"] == "MAX" else nn.AdaptiveAvgPool2d(1)
    kernel, stride, pad = tuple(s["kernel"]), tuple(s["stride"]), tuple(s["pad"])
    if s["pool"] == "MAX":
        return nn.MaxPool2d(kernel, stride, pad, ceil_mode=True)
    return nn.AvgPool2d(kernel, stride, pad, ceil_mode=True, count_include_pad=True)


def conv(s: dict[str, Any], channels: int) -> nn.Module:
    return nn.Conv2d(channels, s["num_output"], tuple(s["kernel"]), tuple(s["stride"]), tuple(s["pad"]),
                     tuple(s["dilation"]), s["group"], bias=s["bias"])  # fmt: skip


def module(entry: dict[str, Any], shapes: dict[str, list[int]]) -> nn.Module:
    """The torch module of one spec layer (BatchNorm without its Scale: not affine)."""
    kind, s, first = entry["type"], entry["settings"], shapes[entry["bottom"][0]]
    if kind == "Convolution":
        return conv(s, first[0])
    if kind == "InnerProduct":
        if s["transpose"]:
            raise ValueError(f"layer {entry['name']}: transposed InnerProduct is not translated")
        return FlattenLinear(int(np.prod(first[s["axis"] - 1 :])), s["num_output"], s["bias"], s["axis"])
    if kind == "BatchNorm":
        return nn.BatchNorm2d(first[0], eps=s["eps"], momentum=1 - s["moving_average_fraction"], affine=False)
    if kind == "ReLU":
        return nn.ReLU() if s["negative_slope"] == 0 else nn.LeakyReLU(s["negative_slope"])
    if kind == "Pooling":
        return pooling(s)
    if kind == "Eltwise":
        return Eltwise(s["operation"], s["coeff"])
    if kind == "Concat":
        return Concat(s["axis"])
    if kind == "Dropout":
        return nn.Dropout(s["ratio"])
    raise ValueError(f"layer {entry['name']}: no twin for Caffe type {kind}")


def scale_after(layers: list[dict[str, Any]], index: int) -> int | None:
    """The Scale layer that reads BatchNorm `index`'s top directly after it, if any."""
    bn = layers[index]
    for j in range(index + 1, len(layers)):
        if bn["top"][0] in layers[j]["bottom"]:
            ok = layers[j]["type"] == "Scale" and layers[j]["settings"]["bias"] and len(layers[j]["bottom"]) == 1
            return j if ok else None
    return None


class Twin(nn.Module):
    """A Caffe net in torch modules, run in Caffe's layer order over named blobs."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.spec, self.layers = spec, nn.ModuleDict()
        self.steps: list[tuple[str, list[str], list[str]]] = []  # module key, bottoms, tops
        self.caffe: dict[str, list[str]] = {}  # module key -> the Caffe layers it stands for
        layers, merged = spec["layers"], set()
        for index, entry in enumerate(layers):
            if index in merged:
                continue
            name = key(entry["name"])
            self.layers[name] = module(entry, spec["blobs"])
            self.caffe[name] = [entry["name"]]
            scale = scale_after(layers, index) if entry["type"] == "BatchNorm" else None
            if scale is not None:
                self.layers[name] = bn_affine(self.layers[name])
                self.caffe[name].append(layers[scale]["name"])
                merged.add(scale)
                self.steps.append((name, entry["bottom"], layers[scale]["top"]))
            elif entry["type"] == "Scale":
                raise ValueError(f"layer {entry['name']}: a Scale not right after a BatchNorm is not translated")
            else:
                self.steps.append((name, entry["bottom"], entry["top"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blobs = {self.spec["input"]["blob"]: x}
        for name, bottoms, tops in self.steps:
            blobs[tops[0]] = self.layers[name](*[blobs[b] for b in bottoms])
        return torch.flatten(blobs[self.spec["output"]], 1)

    def classifier(self) -> list[nn.Module]:
        """The modules of the layers pytrim never trims (the classifier): Torch-Pruning ignores them."""
        ignored = set(self.spec["ignored"])
        return [self.layers[name] for name, caffe in self.caffe.items() if ignored & set(caffe)]


def bn_affine(bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=True)


def load_weights(twin: Twin, arrays: Any) -> None:
    """Caffe's blobs into the twin's parameters and buffers (BatchNorm: the stored sums divided
    by the scale factor; a factor of 0 means 0, as Caffe reads it)."""
    index = {entry["name"]: j for j, entry in enumerate(twin.spec["layers"])}

    def blob(layer: str, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(arrays[f"L{index[layer]}_{i}"], np.float32))

    with torch.no_grad():
        for name, caffe in twin.caffe.items():
            m, kind = twin.layers[name], twin.spec["layers"][index[caffe[0]]]["type"]
            if kind == "Convolution":
                m.weight.copy_(blob(caffe[0], 0))
                if m.bias is not None:
                    m.bias.copy_(blob(caffe[0], 1))
            elif kind == "InnerProduct":
                m.linear.weight.copy_(blob(caffe[0], 0).reshape(m.linear.weight.shape))
                if m.linear.bias is not None:
                    m.linear.bias.copy_(blob(caffe[0], 1).reshape(-1))
            elif kind == "BatchNorm":
                factor = float(blob(caffe[0], 2).reshape(-1)[0])
                factor = 0.0 if factor == 0 else 1.0 / factor
                m.running_mean.copy_(blob(caffe[0], 0).reshape(-1) * factor)
                m.running_var.copy_(blob(caffe[0], 1).reshape(-1) * factor)
                if len(caffe) > 1:
                    m.weight.copy_(blob(caffe[1], 0).reshape(-1))
                    m.bias.copy_(blob(caffe[1], 1).reshape(-1))


def multipliers(twin: Twin) -> dict[int, tuple[float, float]]:
    """id(parameter) -> (lr_mult, decay_mult) as the train_val gives them (Scale's for the
    BatchNorm's affine weight and bias)."""
    by_name = {entry["name"]: entry for entry in twin.spec["layers"]}
    found: dict[int, tuple[float, float]] = {}
    for name, caffe in twin.caffe.items():
        m, kind = twin.layers[name], by_name[caffe[0]]["type"]
        if kind in ("Convolution", "InnerProduct"):
            target = m if kind == "Convolution" else m.linear
            mults = by_name[caffe[0]]["multipliers"]
            params = [target.weight] + ([target.bias] if target.bias is not None else [])
        elif kind == "BatchNorm" and len(caffe) > 1:
            mults, params = by_name[caffe[1]]["multipliers"], [m.weight, m.bias]
        else:
            continue
        for p, (lr, decay) in zip(params, mults, strict=True):
            found[id(p)] = (lr, decay)
    return found


def load_twin(prefix: str | Path) -> Twin:
    """The twin of <prefix>.json with the weights of <prefix>.npz, in eval mode."""
    prefix = Path(prefix)
    spec = json.loads(prefix.with_suffix(".json").read_text())
    twin = Twin(spec)
    with np.load(prefix.with_suffix(".npz")) as arrays:
        load_weights(twin, arrays)
    return twin.eval()


def macs(model: nn.Module, shape: list[int]) -> int:
    """Multiply-adds per image of the Conv2d and Linear modules, as pytrim counts them
    (pytrim.stats.cost: a convolution's weights per output channel times its output
    elements, a Linear's weights)."""
    total = 0

    def hook(m: nn.Module, _: Any, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += m.weight[0].numel() * out[0].numel()
        else:
            total += m.weight.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *shape))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total


def caffe_params(model: nn.Module) -> int:
    """Parameters as a caffemodel stores them: weights and biases, BatchNorm's mean, variance
    and scale factor (3 blobs), Scale's gamma and beta."""
    total = sum(p.numel() for p in model.parameters())
    return total + sum(m.running_mean.numel() * 2 + 1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
