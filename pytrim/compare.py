"""Compare pruning criteria on the same net, data and retraining budget.

For each net: the baseline (trained if missing), one statistics pass (pytrim.collect.
collect_layer_data, with gradients for Taylor), then each criterion:
- unit criteria (apoz, mean_activation, l1, taylor, random): the same fraction of neurons
  of the same layers is cut physically (pytrim.choose ratio rule + pytrim.cut, verified);
- magnitude (Han et al.): connections with |w| <= quality x std(w) masked in every layer;
- relief (NN Relief): layer by layer, on the already-pruned inputs, each neuron keeps the
  smallest set of incoming connections that carries alpha of its importance; neurons left
  without incoming or outgoing connections, or whose output is always zero, are then cut
  physically;
then the same fine-tuning budget (masked criteria retrain with their masks held at zero),
and top-1 before and after, structural and non-zero parameters, compression and FLOPs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffemodel import Caffemodel
from pytrim.choose import Rule, Selection, choose
from pytrim.collect import collect_layer_data, net_graph
from pytrim.criteria import CONNECTION, UNIT, expand_mask, magnitude_mask, relief_masks, unit_scores
from pytrim.cut import cut, trimmable
from pytrim.files import write_atomic, write_json
from pytrim.graph import consumers
from pytrim.measure import flops
from pytrim.netcheck import load_net
from pytrim.protoutil import read_net
from pytrim.runner import run_step
from pytrim.train import train


@dataclass
class NetSpec:
    """One net of the comparison."""

    name: str
    net: Path
    deploy: Path
    weights: Path
    baseline_solver: Path
    finetune_solver: Path


@dataclass
class Settings:
    """Matched settings for every criterion."""

    ratio: float = 0.5  # unit criteria: fraction of neurons cut in each trimmable layer
    quality: float = 1.0  # magnitude: threshold = quality x std(w)
    alpha_conv: float = 0.9  # relief
    alpha_fc: float = 0.95
    finetune_iters: int = 1000
    stats_images: int = 2000
    seed: int = 0


def nonzero_params(weights: Path) -> tuple[int, int]:
    """(structural parameters, non-zero parameters) of a caffemodel."""
    with Caffemodel(weights) as model:
        total = model.params()
        nonzero = sum(int(np.count_nonzero(b.data)) for layer in model.layers.values() for b in layer.blobs)
    return total, nonzero


def net_flops(net_path: Path, weights: Path) -> int:
    return flops(load_net(net_path, weights), read_net(net_path))


def save_masked(net_path: Path, weights: Path, masks: dict[str, np.ndarray], out: Path) -> Path:
    """A copy of `weights` with the masked connections set to zero."""
    with Caffemodel(weights) as model:
        replace = {}
        for name, mask in masks.items():
            arrays = model.arrays(name)
            replace[name] = [arrays[0] * mask, *arrays[1:]]
        return model.write(out, replace)


def relief(spec: NetSpec, settings: Settings, folder: Path, log) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """NN Relief: masks layer by layer, then orphaned neurons cut. Returns (net, weights, masks)."""
    net_param = read_net(spec.net)
    layers = [layer.name for layer in net_param.layer if layer.type in ("Convolution", "InnerProduct")]
    layers = list(dict.fromkeys(layers))
    types = {layer.name: layer.type for layer in net_param.layer}
    masks: dict[str, np.ndarray] = {}
    for name in layers:
        data = collect_layer_data(spec.net, spec.weights, [name], limit=settings.stats_images, masks=masks)[name]
        alpha = settings.alpha_conv if types[name] == "Convolution" else settings.alpha_fc
        masks[name] = expand_mask(relief_masks(data, alpha), data.weights.shape)
        log(f"  relief {name}: keeps {masks[name].mean():.1%} of its connections (alpha {alpha})")
    # Orphans: no incoming or outgoing connection left, or an output that is always zero.
    _, graph = net_graph(spec.net)
    groups = trimmable(graph)
    final = collect_layer_data(spec.net, spec.weights, list(groups), limit=settings.stats_images, masks=masks)
    selections = {}
    for name, group in groups.items():
        width = masks[name].shape[0]
        incoming = masks[name].reshape(width, -1).any(axis=1)
        outgoing = np.ones(width, dtype=bool)
        for use in consumers(graph, group):
            mask = masks[use.layer]  # conv [out, width, kh, kw]; fc [out, width * H*W], channel-major
            outgoing &= mask.reshape(mask.shape[0], width, -1).any(axis=(0, 2))
        alive = incoming & outgoing & (final[name].zeros < final[name].images * final[name].positions)
        if not alive.all():
            keep = np.flatnonzero(alive) if alive.any() else np.array([0])
            selections[name] = Selection(name, width, keep, np.setdiff1d(np.arange(width), keep))
            log(f"  relief {name}: {width - keep.size} orphaned neurons cut")
    masked = save_masked(spec.net, spec.weights, masks, folder / "masked.caffemodel")
    if not selections:
        return spec.net, masked, masks
    out_net = folder / "train_val.prototxt"
    cut([spec.net], masked, selections, [out_net], folder / "cut.caffemodel")
    with Caffemodel(folder / "cut.caffemodel") as model:
        new_masks = {name: model.arrays(name)[0] != 0 for name in masks}
    return out_net, folder / "cut.caffemodel", new_masks


def evaluate(net: Path, weights: Path) -> dict[str, Any]:
    """Top-1/top-5 of `weights` in a child process (its log beside the weights)."""
    log = weights.parent / "logs" / f"evaluate-{weights.stem}.log"
    return run_step("evaluate", ["--net", str(net), "--weights", str(weights), "--quiet"], log).result


def run_net(spec: NetSpec, criteria: list[str], settings: Settings, out: Path, log=print) -> list[dict[str, Any]]:
    """Every criterion on one net; returns one report entry per criterion (and the baseline)."""
    out.mkdir(parents=True, exist_ok=True)
    if not spec.weights.is_file():
        log(f"{spec.name}: training the baseline ({spec.baseline_solver})")
        train(spec.baseline_solver, spec.weights, net_path=spec.net, progress=False)
    base_params, _ = nonzero_params(spec.weights)
    base_acc = evaluate(spec.net, spec.weights)
    entries = [
        {
            "criterion": "baseline",
            "net": spec.name,
            "params": base_params,
            "nonzero": base_params,
            "compression": 1.0,
            "top1_before": base_acc["top1"],
            "top1": base_acc["top1"],
            "flops": net_flops(spec.net, spec.weights),
        }
    ]
    log(f"{spec.name}: baseline {base_params:,} parameters, top-1 {base_acc['top1']:.2%}")
    unit_layers = list(trimmable(net_graph(spec.net)[1]))
    stats = None
    if any(c in UNIT for c in criteria):
        stats = collect_layer_data(spec.net, spec.weights, unit_layers, limit=settings.stats_images, taylor=True)
    for criterion in criteria:
        start = time.monotonic()
        folder = out / spec.name / criterion
        folder.mkdir(parents=True, exist_ok=True)
        masks: dict[str, np.ndarray] = {}
        if criterion in UNIT:
            assert stats is not None
            selections = {
                name: choose(
                    name, unit_scores(criterion, stats[name], seed=settings.seed), Rule("ratio", ratio=settings.ratio)
                )
                for name in unit_layers
            }
            net = folder / "train_val.prototxt"
            weights = folder / "pruned.caffemodel"
            cut([spec.net], spec.weights, selections, [net], weights)
        elif criterion == "magnitude":
            with Caffemodel(spec.weights) as model:
                masks = {name: magnitude_mask(model.arrays(name)[0], settings.quality) for name in model.layers}
            net, weights = spec.net, save_masked(spec.net, spec.weights, masks, folder / "pruned.caffemodel")
        elif criterion == "relief":
            net, weights, masks = relief(spec, settings, folder, log)
        else:
            raise ValueError(f"unknown criterion {criterion!r} (one of {', '.join(UNIT + CONNECTION)})")
        before = evaluate(net, weights)
        retrained = folder / "retrained.caffemodel"
        if masks:
            np.savez(folder / "masks.npz", **masks)
            run_step(
                "train-masked",
                [
                    "--solver",
                    str(spec.finetune_solver),
                    "--net",
                    str(net),
                    "--weights",
                    str(weights),
                    "--masks",
                    str(folder / "masks.npz"),
                    "--max-iter",
                    str(settings.finetune_iters),
                    "--out",
                    str(retrained),
                    "--quiet",
                ],
                folder / "logs/train-masked.log",
                f"masked retraining ({criterion})",
            )
        else:
            train(
                spec.finetune_solver,
                retrained,
                weights=weights,
                max_iter=settings.finetune_iters,
                net_path=net,
                progress=False,
            )
        after = evaluate(net, retrained)
        params, nonzero = nonzero_params(retrained)
        entry = {
            "criterion": criterion,
            "net": spec.name,
            "params": params,
            "nonzero": nonzero,
            "compression": base_params / nonzero,
            "top1_before": before["top1"],
            "top1": after["top1"],
            "flops": net_flops(net, retrained),
            "seconds": round(time.monotonic() - start, 1),
        }
        entries.append(entry)
        log(
            f"{spec.name} {criterion}: {params:,} parameters ({nonzero:,} non-zero, {entry['compression']:.2f}x), "
            f"top-1 {before['top1']:.2%} -> {after['top1']:.2%}"
        )
    return entries


def markdown(entries: list[dict[str, Any]], settings: Settings) -> str:
    lines = [
        "# Pruning criteria compared",
        "",
        f"Unit criteria cut {settings.ratio:.0%} of the neurons of every trimmable layer; magnitude masks "
        f"|w| <= {settings.quality} x std(w); NN Relief alpha {settings.alpha_conv} (conv) / {settings.alpha_fc} (fc). "
        f"Every pruned net is retrained {settings.finetune_iters} iterations. Compression = baseline parameters / "
        "non-zero parameters; FLOPs are dense (masked connections would need sparse kernels to save time).",
        "",
        "| Net | Criterion | Parameters | Non-zero | Compression | FLOPs | Top-1 before retraining | Top-1 after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        lines.append(
            f"| {e['net']} | {e['criterion']} | {e['params']:,} | {e['nonzero']:,} | {e['compression']:.2f}x "
            f"| {e['flops']:,} | {e['top1_before']:.2%} | {e['top1']:.2%} |"
        )
    return "\n".join(lines) + "\n"


def plot(entries: list[dict[str, Any]], path: Path) -> Path:
    """Top-1 after retraining against compression, one marker per criterion, one colour per net."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    markers = dict(zip(["baseline", *UNIT, *CONNECTION], "o^sDvP*X", strict=False))
    colours = dict(zip(sorted({e["net"] for e in entries}), ["#4477aa", "#cc6677", "#228833"], strict=False))
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for e in entries:
        ax.scatter(
            e["compression"], 100 * e["top1"], marker=markers.get(e["criterion"], "o"), color=colours[e["net"]], s=55
        )
    for criterion, marker in markers.items():
        ax.scatter([], [], marker=marker, color="grey", label=criterion)
    for net, colour in colours.items():
        ax.scatter([], [], marker="s", color=colour, label=net)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x" if v in (2, 3, 5) else ""))
    ax.set_xlabel("compression (baseline parameters / non-zero parameters)")
    ax.set_ylabel("top-1 after retraining (%)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write(entries: list[dict[str, Any]], settings: Settings, out: Path) -> None:
    write_json(out / "report.json", entries)
    write_atomic(out / "report.md", markdown(entries, settings))
    plot(entries, out / "accuracy_vs_compression.png")
