"""NN Relief (Dekhovich et al. 2021) as its authors' code runs it (adekhovich/NNrelief).

Each round, on a fixed random sample of training images (1,000 by default):
- every neuron i of an InnerProduct layer scores its connections j as mean_s |x_sj w_ij| and
  its bias as |b_i|, sorted together; it keeps the smallest set of the largest scores whose sum
  reaches alpha of the total (the element that crosses is kept, ties at the threshold and the
  smallest element always go: the authors' exact rule, `keep_rule`);
- every output channel o of a Convolution scores input channel c as the sum over output
  positions of the correlation of A_c (the mean over samples of |x_c|) with |K_oc|, and its
  bias as |b_o| times the number of output positions, then applies the same rule;
- a neuron whose output is zero on every sample (dead) loses all its weights and its bias;
- convolutions are scored on the round's starting activations; InnerProduct layers on the
  activations after the convolutions' masks are applied (the authors' feature-extractor /
  classifier split); within each part, every layer sees the round-start activations;
- from the top down, a neuron left without outgoing connections loses its weights and bias;
- masks accumulate over the rounds.
This module is the algorithm (one round's masks); running it round after round with
retraining is pytrim.experiments.relief. Where pytrim differs from the authors' code on
purpose, README.md says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pytrim.caffeio.netcheck import load_net
from pytrim.caffeio.proto import layers_in_phase, read_net, with_test_data
from pytrim.core.errors import BadInput, UnsupportedTopology
from pytrim.feeds.source import batches, data_source
from pytrim.graph.build import net_graph
from pytrim.graph.queries import consumers, group_of, read_by, rows_of, trimmable
from pytrim.retrain.masked import Masks, apply_masks


def keep_rule(importance: np.ndarray, alpha: float) -> np.ndarray:
    """The authors' per-neuron rule over one neuron's scores (connections, then the bias):
    sort descending, find the element whose cumulative sum crosses alpha of the total, and
    keep the scores strictly above the element after it (the last one if it is the last)."""
    ordered = np.sort(importance)[::-1]
    crossing = int(np.sum(np.cumsum(ordered) < alpha * importance.sum()))
    pivot = crossing + 1 if crossing < importance.size - 1 else importance.size - 1
    return importance > ordered[pivot]


def fc_importance(weights: np.ndarray, bias: np.ndarray | None, input_abs_mean: np.ndarray) -> np.ndarray:
    """[out, in + 1]: mean_s |x_sj w_ij| = |w_ij| mean_s |x_sj| per connection, then |b_i|."""
    scores = np.abs(weights) * input_abs_mean[None, :]
    bias_scores = np.abs(bias) if bias is not None else np.zeros(weights.shape[0])
    return np.concatenate([scores, bias_scores[:, None]], axis=1)


def window_sums(mean_abs: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], pad: tuple[int, int],
                out_hw: tuple[int, int]) -> np.ndarray:  # fmt: skip
    """S[c, u, v]: the sum, over the convolution's output positions, of the input A_c that
    kernel tap (u, v) meets there (zero padding included)."""
    channels, height, width = mean_abs.shape
    padded = np.zeros((channels, height + 2 * pad[0], width + 2 * pad[1]))
    padded[:, pad[0] : pad[0] + height, pad[1] : pad[1] + width] = mean_abs
    sums = np.zeros((channels, *kernel))
    rows = np.arange(out_hw[0]) * stride[0]
    cols = np.arange(out_hw[1]) * stride[1]
    for u in range(kernel[0]):
        for v in range(kernel[1]):
            sums[:, u, v] = padded[:, rows + u][:, :, cols + v].sum(axis=(1, 2))
    return sums


def conv_importance(weights: np.ndarray, bias: np.ndarray | None, sums: np.ndarray, positions: int) -> np.ndarray:
    """[out, in + 1]: per (o, c) the correlation of A_c with |K_oc| summed over the output
    positions (= sum over taps of |K_oc[u, v]| S[c, u, v]), then |b_o| x positions."""
    scores = np.einsum("ocuv,cuv->oc", np.abs(weights), sums)
    bias_scores = np.abs(bias) * positions if bias is not None else np.zeros(weights.shape[0])
    return np.concatenate([scores, bias_scores[:, None]], axis=1)


def layer_masks(importance: np.ndarray, alpha: float, dead: np.ndarray, shape: tuple[int, ...]) -> tuple:
    """Per neuron the authors' rule over (connections, bias); dead neurons lose everything.
    Returns (weight keep of `shape`, bias keep)."""
    keep = np.zeros(importance.shape, dtype=bool)
    for i in range(importance.shape[0]):
        if not dead[i]:
            keep[i] = keep_rule(importance[i], alpha)
    weight_keep = keep[:, :-1]
    if len(shape) > 2:  # a convolution: one decision per (o, c) kernel
        weight_keep = np.broadcast_to(weight_keep[:, :, None, None], shape)
    return np.ascontiguousarray(weight_keep), keep[:, -1]


@dataclass
class LayerInput:
    """What a layer's scores need from the sample: mean |x| per input (channel map of a
    convolution, element of an InnerProduct) and which of its outputs are zero throughout."""

    mean_abs: np.ndarray
    dead: np.ndarray


def score(net: Any, layer: Any, inputs: LayerInput, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """The weight and bias keep masks of one Convolution/InnerProduct layer."""
    params = net.params[layer.name]
    weights = params[0].data
    bias = params[1].data if len(params) > 1 else None
    if layer.type == "InnerProduct":
        importance = fc_importance(weights.reshape(weights.shape[0], -1), bias, inputs.mean_abs.ravel())
        return layer_masks(importance, alpha, inputs.dead, weights.shape)
    spec = layer.convolution_param
    if spec.group != 1 or any(d != 1 for d in spec.dilation):
        raise BadInput(f"NN Relief: convolution {layer.name!r} is grouped or dilated (not supported)")
    out = net.blobs[layer.top[0]].data.shape[2:]
    sums = window_sums(inputs.mean_abs, weights.shape[2:], _pair(spec.stride, 1), _pair(spec.pad, 0), out)
    importance = conv_importance(weights, bias, sums, int(np.prod(out)))
    return layer_masks(importance, alpha, inputs.dead, weights.shape)


def _pair(values: Any, default: int) -> tuple[int, int]:
    values = list(values) or [default]
    return (int(values[0]), int(values[-1]))


def masked_count(masks: Masks) -> int:
    """Parameters kept: the masks' entries that are set (weights and biases, as the authors count)."""
    return int(sum(int(mask.sum()) for mask in masks.values()))


def sample_inputs(net: Any, data: Any, layers: list[Any], dead_blobs: dict[str, str]) -> dict[str, LayerInput]:
    """One pass over the sample: per layer the mean |x| of its input (per channel map for a
    convolution, per element for an InnerProduct) and which outputs never leave zero
    (`dead_blobs`: layer -> the blob its consumers read; the classifier is never dead)."""
    sums: dict[str, Any] = {layer.name: 0.0 for layer in layers}
    alive = {name: 0 for name in dead_blobs}
    for take in batches(net, data, "relief sample", progress=False):
        for layer in layers:
            x = np.abs(net.blobs[layer.bottom[0]].data[:take]).astype(np.float64)
            per = x.sum(axis=0) if layer.type == "Convolution" else x.reshape(take, -1).sum(axis=0)
            sums[layer.name] = sums[layer.name] + per
        for name, blob in dead_blobs.items():
            values = net.blobs[blob].data[:take]
            alive[name] = alive[name] | (values.reshape(take, values.shape[1], -1) != 0).any(axis=(0, 2))
    inputs = {}
    for layer in layers:
        width = net.params[layer.name][0].data.shape[0]
        dead = ~np.asarray(alive[layer.name], dtype=bool) if layer.name in alive else np.zeros(width, dtype=bool)
        inputs[layer.name] = LayerInput(np.asarray(sums[layer.name]) / data.total, dead)
    return inputs


def dead_blobs(graph: Any, layers: list[Any]) -> dict[str, str]:
    """layer -> the blob its output is read from (a ReLU output where there is one); layers
    that cannot be trimmed (the classifier) are never dead."""
    found = {}
    for layer in layers:
        try:
            group = group_of(graph, layer.name)
        except UnsupportedTopology:
            continue
        points = [p for p in group.measure if p[4]] or group.measure
        found[layer.name] = points[0][0]
    return found


def orphans(graph: Any, net_param: Any, masks: Masks) -> Masks:
    """From the top down: a channel none of whose consumers reads it any more loses its
    producers' weights and bias (which may orphan the channels below it in turn)."""
    order = [layer.name for layer in net_param.layer]
    for group in sorted(trimmable(graph).values(), key=lambda g: order.index(g.name), reverse=True):
        outgoing = np.zeros(group.width, dtype=bool)
        for use in consumers(graph, group):
            if use.groups > 1:
                outgoing[:] = True  # a grouped convolution: not followed here
                continue
            outgoing |= read_by(graph, use, group, np.moveaxis(masks[use.layer], use.params[0][1], 1))
        for producer in group.producers:
            axis = next(u.params[0][1] for u in graph.uses if u.layer == producer and u.kind == "producer")
            gone = ~outgoing[rows_of(graph, producer)]
            index = [slice(None)] * masks[producer].ndim
            index[axis] = gone
            masks[producer][tuple(index)] = False
            if f"{producer}#1" in masks:
                masks[f"{producer}#1"][gone] = False
    return masks


def full_masks(net: Any, layers: list[Any]) -> Masks:
    """Everything kept: a weight and a bias mask per Convolution/InnerProduct layer."""
    masks = {}
    for layer in layers:
        params = net.params[layer.name]
        masks[layer.name] = np.ones(params[0].data.shape, dtype=bool)
        if len(params) > 1:
            masks[f"{layer.name}#1"] = np.ones(params[1].data.shape, dtype=bool)
    return masks


def relief_round(net_path: Any, weights: Any, masks: Masks | None, sample: Any, alphas: tuple, tmp: Any) -> Masks:
    """One round of NN Relief on the current (masked) weights: new masks, accumulated."""
    net_param, graph = net_graph(net_path)
    sample_net = with_test_data(net_path, sample, tmp / "sample.prototxt")
    data = data_source(read_net(sample_net))
    net = load_net(sample_net, weights)
    layers = [layer for layer in layers_in_phase(net_param, "TEST") if layer.type in ("Convolution", "InnerProduct")]
    masks = masks or full_masks(net, layers)
    apply_masks(net, masks)
    deads = dead_blobs(graph, layers)
    for kind, alpha in zip(("Convolution", "InnerProduct"), alphas, strict=True):
        part = [layer for layer in layers if layer.type == kind]
        inputs = sample_inputs(net, data, part, {n: b for n, b in deads.items() if n in {x.name for x in part}})
        for layer in part:
            weight_keep, bias_keep = score(net, layer, inputs[layer.name], alpha)
            masks[layer.name] &= weight_keep
            if f"{layer.name}#1" in masks:
                masks[f"{layer.name}#1"] &= bias_keep
        apply_masks(net, masks)
    return orphans(graph, net_param, masks)
