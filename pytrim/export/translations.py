"""One translation per Caffe layer type, in one table (as the channel graph has one handler per
type): what ONNX nodes compute the layer, with Caffe's conventions kept where ONNX's defaults
differ (../shared/caffe-notes.md, "Leaving Caffe"):

- Pooling: Caffe rounds the output size up and drops a last window that would start in the
  padding; the output size Caffe built is known, so the end padding is chosen to give it.
  Average pooling divides by the window clipped to the padded image (not beyond it): the image
  is zero-padded first, then averaged over what lies inside the padded image.
- BatchNorm: the stored mean and variance are divided by the stored factor (blob 2; 0 means 0);
  a Scale that follows it in place is folded into the same BatchNormalization.
- LRN: across channels ONNX's LRN is Caffe's (alpha divided by size in both); within a channel it
  is (1 + alpha/size^2 * the sum of squares around)^-beta, as Caffe builds it from pooling.
- InnerProduct flattens from `axis`; `transpose` stores the weight as [in, out].
A type that is not in the table, or a setting ONNX cannot express, is refused by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from pytrim.export.graph import Graph, refuse

Translation = Callable[[Graph, Any], None]


def _spatial(values: list[int], single: int | None, h: int | None, w: int | None, dims: int, default: int) -> list[int]:
    """Caffe's per-axis settings: a repeated field, or *_h/*_w, or one value for every axis."""
    if h is not None and w is not None:
        return [h, w]
    if values:
        return list(values) * dims if len(values) == 1 else list(values)
    return [single if single is not None else default] * dims


def _opt(spec: Any, name: str) -> int | None:
    return int(getattr(spec, name)) if spec.HasField(name) else None


def convolution(g: Graph, layer: Any) -> None:
    """Convolution and Deconvolution (ConvTranspose): group, dilation, pad, stride, bias."""
    spec, bottom = layer.convolution_param, layer.bottom[0]
    dims = len(g.shape(bottom)) - 2
    if spec.axis != 1 or len(layer.bottom) != 1 or len(layer.top) != 1:
        raise refuse(layer, "works on another axis or on several blobs, which pytrim does not export")
    kernel = _spatial(spec.kernel_size, None, _opt(spec, "kernel_h"), _opt(spec, "kernel_w"), dims, 1)
    pad = _spatial(spec.pad, None, _opt(spec, "pad_h"), _opt(spec, "pad_w"), dims, 0)
    stride = _spatial(spec.stride, None, _opt(spec, "stride_h"), _opt(spec, "stride_w"), dims, 1)
    dilation = _spatial(spec.dilation, None, None, None, dims, 1)
    blobs = g.weights(layer.name)
    inputs = [g.value(bottom), g.const(f"{layer.name}/weights", blobs[0])]
    if spec.bias_term:
        inputs.append(g.const(f"{layer.name}/bias", blobs[1]))
    op = "Conv" if layer.type == "Convolution" else "ConvTranspose"
    g.node(op, inputs, [g.top(layer.top[0], layer.name)], layer.name, kernel_shape=kernel, pads=pad + pad,
           strides=stride, dilations=dilation, group=int(spec.group))  # fmt: skip


def inner_product(g: Graph, layer: Any) -> None:
    """InnerProduct: everything from `axis` on flattened, times the weights, plus the bias."""
    spec, bottom = layer.inner_product_param, layer.bottom[0]
    axis = spec.axis % len(g.shape(bottom))
    blobs = g.weights(layer.name)
    weights = blobs[0].reshape(blobs[0].shape[0], -1) if not spec.transpose else blobs[0].reshape(-1, spec.num_output)
    value = g.value(bottom)
    top = g.top(layer.top[0], layer.name)
    if axis == 1:
        flat = g.temp(f"{layer.name}/flat")
        g.node("Flatten", [value], [flat], f"{layer.name}/flatten", axis=1)
        inputs = [flat, g.const(f"{layer.name}/weights", weights)]
        inputs += [g.const(f"{layer.name}/bias", blobs[1])] if spec.bias_term else []
        g.node("Gemm", inputs, [top], layer.name, transB=0 if spec.transpose else 1)
        return
    flat = g.temp(f"{layer.name}/flat")
    g.node("Reshape", [value, g.const(f"{layer.name}/shape", [0] * axis + [-1], np.int64)], [flat],
           f"{layer.name}/flatten")  # fmt: skip
    product = g.temp(f"{layer.name}/product") if spec.bias_term else top
    g.node("MatMul", [flat, g.const(f"{layer.name}/weights", weights if spec.transpose else weights.T)], [product],
           layer.name)  # fmt: skip
    if spec.bias_term:
        g.node("Add", [product, g.const(f"{layer.name}/bias", blobs[1])], [top], f"{layer.name}/bias")


def _channels_shape(g: Graph, blob: str, axis: int, values: np.ndarray) -> np.ndarray:
    """Parameters along axes [axis, axis + values.ndim) of `blob`, shaped to broadcast over it."""
    trailing = len(g.shape(blob)) - axis - values.ndim
    return values.reshape(values.shape + (1,) * trailing)


def batch_norm(g: Graph, layer: Any) -> None:
    """BatchNorm with its stored statistics (TEST phase: global statistics only)."""
    spec = layer.batch_norm_param
    if spec.HasField("use_global_stats") and not spec.use_global_stats:
        raise refuse(layer, "normalises with the statistics of each batch (use_global_stats: false)")
    mean, variance, factor = (np.asarray(b, dtype=np.float64).ravel() for b in g.weights(layer.name)[:3])
    scale = 0.0 if factor[0] == 0 else 1.0 / factor[0]
    channels = mean.size
    inputs = [g.value(layer.bottom[0]), g.const(f"{layer.name}/gamma", np.ones(channels)),
              g.const(f"{layer.name}/beta", np.zeros(channels)), g.const(f"{layer.name}/mean", mean * scale),
              g.const(f"{layer.name}/variance", variance * scale)]  # fmt: skip
    made = g.node("BatchNormalization", inputs, [g.top(layer.top[0], layer.name)], layer.name, epsilon=float(spec.eps))
    g.folded[g.value(layer.top[0])] = made


def scale(g: Graph, layer: Any) -> None:
    """Scale (gamma, and beta with bias_term) and Bias; with two bottoms, the second bottom is the
    factor (squeeze-and-excitation). Directly after a BatchNorm it joins the BatchNormalization."""
    spec = layer.scale_param if layer.type == "Scale" else layer.bias_param
    bottom, ndim = layer.bottom[0], len(g.shape(layer.bottom[0]))
    if len(layer.bottom) == 2:
        return _scale_by_blob(g, layer, ndim)
    blobs = g.weights(layer.name)
    axis = spec.axis % ndim
    if layer.type == "Scale" and _fold_into_batch_norm(g, layer, blobs, axis):
        return None
    value = g.value(bottom)
    out = g.top(layer.top[0], layer.name)
    if layer.type == "Bias":
        g.node("Add", [value, g.const(f"{layer.name}/bias", _channels_shape(g, bottom, axis, blobs[0]))], [out],
               layer.name)  # fmt: skip
        return None
    gamma = g.const(f"{layer.name}/gamma", _channels_shape(g, bottom, axis, blobs[0]))
    if not spec.bias_term:
        g.node("Mul", [value, gamma], [out], layer.name)
        return None
    product = g.temp(f"{layer.name}/product")
    g.node("Mul", [value, gamma], [product], layer.name)
    g.node("Add", [product, g.const(f"{layer.name}/beta", _channels_shape(g, bottom, axis, blobs[1]))], [out],
           f"{layer.name}/bias")  # fmt: skip
    return None


def _fold_into_batch_norm(g: Graph, layer: Any, blobs: list[np.ndarray], axis: int) -> bool:
    """A per-channel Scale right after a BatchNorm becomes that BatchNormalization's gamma/beta."""
    made = g.folded.pop(g.value(layer.bottom[0]), None)
    if made is None or axis != 1 or blobs[0].ndim != 1:
        return False
    gamma, beta = made.input[1], made.input[2]
    g.initializers[gamma] = blobs[0].astype(np.float32)
    if layer.scale_param.bias_term:
        g.initializers[beta] = blobs[1].astype(np.float32)
    old = made.output[0]
    made.output[0] = g.top(layer.top[0], layer.name)
    g.taken.discard(old)
    for blob, value in list(g.current.items()):
        if value == old:
            g.current[blob] = made.output[0]
    return True


def _scale_by_blob(g: Graph, layer: Any, ndim: int) -> None:
    """x * s (Scale) or x + s (Bias), s of bottom[0]'s shape at [axis, axis + s.ndim)."""
    spec = layer.scale_param if layer.type == "Scale" else layer.bias_param
    factor = layer.bottom[1]
    rank = len(g.shape(factor))
    axis = 0 if rank == 0 else spec.axis % ndim
    trailing = ndim - axis - rank
    shaped = g.value(factor)
    if trailing:
        shaped = g.temp(f"{layer.name}/factor")
        dims = [0] * rank + [1] * trailing if axis == 0 else g.shape(factor) + [1] * trailing
        g.node("Reshape", [g.value(factor), g.const(f"{layer.name}/shape", dims, np.int64)], [shaped],
               f"{layer.name}/reshape")  # fmt: skip
    op = "Mul" if layer.type == "Scale" else "Add"
    inputs = [g.value(layer.bottom[0]), shaped]
    if layer.type == "Scale" and spec.bias_term:
        product = g.temp(f"{layer.name}/product")
        g.node(op, inputs, [product], layer.name)
        bias = _channels_shape(g, layer.bottom[0], axis, g.weights(layer.name)[0])
        g.node("Add", [product, g.const(f"{layer.name}/beta", bias)], [g.top(layer.top[0], layer.name)],
               f"{layer.name}/bias")  # fmt: skip
        return
    g.node(op, inputs, [g.top(layer.top[0], layer.name)], layer.name)


def relu(g: Graph, layer: Any) -> None:
    slope = float(layer.relu_param.negative_slope)
    if slope:
        _unary(g, layer, "LeakyRelu", alpha=slope)
    else:
        _unary(g, layer, "Relu")


def prelu(g: Graph, layer: Any) -> None:
    slopes = g.weights(layer.name)[0].ravel()
    shaped = slopes if layer.prelu_param.channel_shared else _channels_shape(g, layer.bottom[0], 1, slopes)
    _unary(g, layer, "PRelu", [g.const(f"{layer.name}/slope", shaped)])


def _unary(g: Graph, layer: Any, op: str, extra: list[str] | None = None, **attrs: Any) -> None:
    value = g.value(layer.bottom[0])
    g.node(op, [value, *(extra or [])], [g.top(layer.top[0], layer.name)], layer.name, **attrs)


def _affine(g: Graph, layer: Any, value: str, scale_: float, shift: float) -> str:
    """shift + scale * value, skipping what is the identity."""
    if scale_ != 1.0:
        scaled = g.temp(f"{layer.name}/scaled")
        g.node("Mul", [value, g.const(f"{layer.name}/scale", np.float32(scale_))], [scaled], f"{layer.name}/scale")
        value = scaled
    if shift != 0.0:
        shifted = g.temp(f"{layer.name}/shifted")
        g.node("Add", [value, g.const(f"{layer.name}/shift", np.float32(shift))], [shifted], f"{layer.name}/shift")
        value = shifted
    return value


def power(g: Graph, layer: Any) -> None:
    """(shift + scale * x) ^ power."""
    spec = layer.power_param
    value = _affine(g, layer, g.value(layer.bottom[0]), float(spec.scale), float(spec.shift))
    out = g.top(layer.top[0], layer.name)
    if float(spec.power) == 1.0:
        g.node("Identity", [value], [out], layer.name)
    else:
        g.node("Pow", [value, g.const(f"{layer.name}/power", np.float32(spec.power))], [out], layer.name)


def exp_log(g: Graph, layer: Any) -> None:
    """Exp: base ^ (shift + scale * x); Log: log_base(shift + scale * x) (base -1: e)."""
    spec = layer.exp_param if layer.type == "Exp" else layer.log_param
    ln_base = 1.0 if spec.base == -1 else math.log(spec.base)
    value = _affine(g, layer, g.value(layer.bottom[0]), float(spec.scale), float(spec.shift))
    out = g.top(layer.top[0], layer.name)
    if layer.type == "Exp":
        g.node("Exp", [_affine(g, layer, value, ln_base, 0.0)], [out], layer.name)
        return
    logged = g.temp(f"{layer.name}/ln")
    g.node("Log", [value], [logged], layer.name)
    g.node("Mul", [logged, g.const(f"{layer.name}/inverse", np.float32(1.0 / ln_base))], [out], f"{layer.name}/base")


def elementwise(op: str, **fixed: Any) -> Translation:
    def translate(g: Graph, layer: Any) -> None:
        attrs = {key: float(value(layer)) for key, value in fixed.items()}
        _unary(g, layer, op, **attrs)

    return translate


def threshold(g: Graph, layer: Any) -> None:
    """1 where x > threshold, else 0."""
    above = g.temp(f"{layer.name}/above")
    limit = g.const(f"{layer.name}/threshold", np.float32(layer.threshold_param.threshold))
    g.node("Greater", [g.value(layer.bottom[0]), limit], [above], f"{layer.name}/compare")
    g.node("Cast", [above], [g.top(layer.top[0], layer.name)], layer.name, to=1)


def clip(g: Graph, layer: Any) -> None:
    low, high = (g.const(f"{layer.name}/{n}", np.float32(v)) for n, v in (("min", layer.clip_param.min),
                                                                           ("max", layer.clip_param.max)))  # fmt: skip
    _unary(g, layer, "Clip", [low, high])


def swish(g: Graph, layer: Any) -> None:
    """x * sigmoid(beta * x)."""
    value = g.value(layer.bottom[0])
    gate = g.temp(f"{layer.name}/gate")
    g.node("Sigmoid", [_affine(g, layer, value, float(layer.swish_param.beta), 0.0)], [gate], f"{layer.name}/sigmoid")
    g.node("Mul", [value, gate], [g.top(layer.top[0], layer.name)], layer.name)


def _pool_settings(layer: Any) -> tuple[list[int], list[int], list[int]]:
    spec = layer.pooling_param
    kernel = _spatial([], _opt(spec, "kernel_size"), _opt(spec, "kernel_h"), _opt(spec, "kernel_w"), 2, 1)
    pad = _spatial([], int(spec.pad), _opt(spec, "pad_h"), _opt(spec, "pad_w"), 2, 0)
    stride = _spatial([], int(spec.stride), _opt(spec, "stride_h"), _opt(spec, "stride_w"), 2, 1)
    return kernel, pad, stride


def pooling(g: Graph, layer: Any) -> None:
    """MAX and AVE pooling with Caffe's output size and average divisor; global pooling."""
    spec = layer.pooling_param
    if spec.pool == spec.STOCHASTIC or len(layer.top) != 1:
        raise refuse(layer, "is stochastic pooling or has a mask top, which ONNX has no operator for")
    value, out = g.value(layer.bottom[0]), layer.top[0]
    if spec.global_pooling:
        return g.node("GlobalMaxPool" if spec.pool == spec.MAX else "GlobalAveragePool", [value],
                      [g.top(out, layer.name)], layer.name)  # fmt: skip
    kernel, pad, stride = _pool_settings(layer)
    size, pooled = g.shape(layer.bottom[0])[2:], g.shape(out)[2:]
    if spec.pool == spec.MAX:
        ends = [
            max(0, (o - 1) * s + k - i - p) for i, o, k, s, p in zip(size, pooled, kernel, stride, pad, strict=True)
        ]
        return g.node("MaxPool", [value], [g.top(out, layer.name)], layer.name, kernel_shape=kernel, strides=stride,
                      pads=pad + ends)  # fmt: skip
    if any(pad):  # zeros inside the padded image count in Caffe's divisor, the rest of a window does not
        padded = g.temp(f"{layer.name}/padded")
        g.node("Pad", [value, g.const(f"{layer.name}/pads", [0, 0, *pad, 0, 0, *pad], np.int64)], [padded],
               f"{layer.name}/pad")  # fmt: skip
        value, size = padded, [i + 2 * p for i, p in zip(size, pad, strict=True)]
    ends = [max(0, (o - 1) * s + k - i) for i, o, k, s in zip(size, pooled, kernel, stride, strict=True)]
    return g.node("AveragePool", [value], [g.top(out, layer.name)], layer.name, kernel_shape=kernel, strides=stride,
                  pads=[0, 0, *ends], count_include_pad=0)  # fmt: skip


def lrn(g: Graph, layer: Any) -> None:
    spec = layer.lrn_param
    size, alpha, beta = int(spec.local_size), float(spec.alpha), float(spec.beta)
    if spec.norm_region == spec.ACROSS_CHANNELS:
        return _unary(g, layer, "LRN", size=size, alpha=alpha, beta=beta, bias=float(spec.k))
    value, pad = g.value(layer.bottom[0]), (size - 1) // 2
    squared, mean = g.temp(f"{layer.name}/squared"), g.temp(f"{layer.name}/mean")
    g.node("Mul", [value, value], [squared], f"{layer.name}/square")
    g.node("AveragePool", [squared], [mean], f"{layer.name}/pool", kernel_shape=[size, size], pads=[pad] * 4,
           count_include_pad=1)  # fmt: skip
    scaled = _affine(g, layer, mean, alpha, 1.0)
    factor = g.temp(f"{layer.name}/factor")
    g.node("Pow", [scaled, g.const(f"{layer.name}/power", np.float32(-beta))], [factor], f"{layer.name}/power")
    g.node("Mul", [value, factor], [g.top(layer.top[0], layer.name)], layer.name)
    return None


def eltwise(g: Graph, layer: Any) -> None:
    """SUM (with coefficients), PROD and MAX of the bottoms."""
    spec = layer.eltwise_param
    values = [g.value(b) for b in layer.bottom]
    out = g.top(layer.top[0], layer.name)
    if spec.operation == spec.PROD:
        return _chain(g, layer, "Mul", values, out)
    if spec.operation == spec.MAX:
        return g.node("Max", values, [out], layer.name)
    coeffs = list(spec.coeff) or [1.0] * len(values)
    terms = []
    for index, (value, coeff) in enumerate(zip(values, coeffs, strict=True)):
        if coeff == 1.0:
            terms.append(value)
            continue
        term = g.temp(f"{layer.name}/term{index}")
        g.node("Mul", [value, g.const(f"{layer.name}/coeff{index}", np.float32(coeff))], [term], f"{layer.name}/coeff")
        terms.append(term)
    return g.node("Sum", terms, [out], layer.name)


def _chain(g: Graph, layer: Any, op: str, values: list[str], out: str) -> None:
    running = values[0]
    for index, value in enumerate(values[1:], start=1):
        target = out if index == len(values) - 1 else g.temp(f"{layer.name}/partial{index}")
        g.node(op, [running, value], [target], layer.name)
        running = target


def _axis(spec: Any, legacy: str, ndim: int) -> int:
    return (int(getattr(spec, legacy)) if spec.HasField(legacy) else int(spec.axis)) % ndim


def concat(g: Graph, layer: Any) -> None:
    axis = _axis(layer.concat_param, "concat_dim", len(g.shape(layer.bottom[0])))
    if axis == 0:
        raise refuse(layer, "concatenates along the batch axis, which a dynamic batch cannot express")
    g.node("Concat", [g.value(b) for b in layer.bottom], [g.top(layer.top[0], layer.name)], layer.name, axis=axis)


def slice_(g: Graph, layer: Any) -> None:
    shape = g.shape(layer.bottom[0])
    axis = _axis(layer.slice_param, "slice_dim", len(shape))
    if axis == 0:
        raise refuse(layer, "slices along the batch axis, which a dynamic batch cannot express")
    sizes = [g.shape(top)[axis] for top in layer.top]
    value = g.value(layer.bottom[0])
    outs = [g.top(top, layer.name) for top in layer.top]
    g.node("Split", [value, g.const(f"{layer.name}/split", sizes, np.int64)], outs, layer.name, axis=axis)


def split(g: Graph, layer: Any) -> None:
    value = g.value(layer.bottom[0])
    for top in layer.top:
        g.alias(top, value)


def identity(g: Graph, layer: Any) -> None:
    """Dropout in TEST: its input unchanged."""
    g.alias(layer.top[0], g.value(layer.bottom[0]))


def reshape(g: Graph, layer: Any) -> None:
    """Flatten and Reshape: the shape Caffe built, the batch kept dynamic (dimension 0 copied)."""
    bottom, top = g.shape(layer.bottom[0]), g.shape(layer.top[0])
    if top == bottom:
        return g.alias(layer.top[0], g.value(layer.bottom[0]))
    if top[0] != bottom[0]:
        raise refuse(layer, "changes the batch axis, which a dynamic batch cannot express")
    dims = g.const(f"{layer.name}/shape", [0, *top[1:]], np.int64)
    return g.node("Reshape", [g.value(layer.bottom[0]), dims], [g.top(layer.top[0], layer.name)], layer.name)


def crop(g: Graph, layer: Any) -> None:
    """Crop bottom 0 to bottom 1's size from `axis` on, at the offsets."""
    spec, shape, size = layer.crop_param, g.shape(layer.bottom[0]), g.shape(layer.bottom[1])
    axis = spec.axis % len(shape)
    if axis == 0:
        raise refuse(layer, "crops the batch axis, which a dynamic batch cannot express")
    axes = list(range(axis, len(shape)))
    offsets = list(spec.offset) * len(axes) if len(spec.offset) == 1 else list(spec.offset) or [0] * len(axes)
    ends = [o + size[a] for o, a in zip(offsets, axes, strict=True)]
    inputs = [g.value(layer.bottom[0]), g.const(f"{layer.name}/starts", offsets, np.int64),
              g.const(f"{layer.name}/ends", ends, np.int64), g.const(f"{layer.name}/axes", axes, np.int64)]  # fmt: skip
    g.node("Slice", inputs, [g.top(layer.top[0], layer.name)], layer.name)


def softmax(g: Graph, layer: Any) -> None:
    _unary(g, layer, "Softmax", axis=int(layer.softmax_param.axis) % len(g.shape(layer.bottom[0])))


def nothing(g: Graph, layer: Any) -> None:
    """Silence: reads blobs and computes nothing."""


TRANSLATIONS: dict[str, Translation] = {
    "Convolution": convolution,
    "Deconvolution": convolution,
    "InnerProduct": inner_product,
    "BatchNorm": batch_norm,
    "Scale": scale,
    "Bias": scale,
    "ReLU": relu,
    "PReLU": prelu,
    "Sigmoid": elementwise("Sigmoid"),
    "TanH": elementwise("Tanh"),
    "ELU": elementwise("Elu", alpha=lambda layer: layer.elu_param.alpha),
    "AbsVal": elementwise("Abs"),
    "BNLL": elementwise("Softplus"),
    "Power": power,
    "Exp": exp_log,
    "Log": exp_log,
    "Threshold": threshold,
    "Clip": clip,
    "Swish": swish,
    "Pooling": pooling,
    "LRN": lrn,
    "Eltwise": eltwise,
    "Concat": concat,
    "Slice": slice_,
    "Split": split,
    "Dropout": identity,
    "Flatten": reshape,
    "Reshape": reshape,
    "Crop": crop,
    "Softmax": softmax,
    "Silence": nothing,
}
