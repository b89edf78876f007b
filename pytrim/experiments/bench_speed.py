"""Benchmark: does a cut make Caffe faster? (runs/bench/speed.json)

Full-size model-zoo nets (deploy prototxts from pytrim.caffeio.zoo, their fillers' random
non-zero weights) have a quarter and a half of every trimmable group removed (channels drawn
at random: speed does not depend on which), with kept widths as they fall and rounded up to a
multiple of 8. Per case: the MACs ratio, the forward-time ratio at batch 1 and batch 8 (the
original and the cuts of one net timed interleaved in one process, pytrim.stats.cost), and
`efficiency` = time ratio / MACs ratio: 1 when the time falls as much as the MACs. Where the
time goes (every layer timed alone, pytrim.stats.cost.by_layer): `mac_layers_efficiency`, the
same ratio for the Convolution, Deconvolution and InnerProduct layers alone, and the speedup
and share of time of all the other layers.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.env import blas_config, load_caffe
from pytrim.caffeio.zoo import write
from pytrim.core.files import provenance
from pytrim.graph.build import net_graph
from pytrim.graph.queries import trimmable
from pytrim.stats.cost import compare_cost
from pytrim.surgery.choose import Rule, choose
from pytrim.surgery.cut import cut

NETS = ("resnet50", "vgg16", "mobilenet_v2", "googlenet", "squeezenet11")
FRACTIONS = (0.25, 0.5)
ROUNDINGS = (1, 8)


def random_weights(deploy: Path, out: Path) -> Path:
    """The prototxt's own fillers (random, non-zero), seeded."""
    caffe = load_caffe()
    caffe.set_random_seed(1701)
    caffe.Net(str(deploy), caffe.TEST).save(str(out))
    return out


def cut_case(deploy: Path, weights: Path, fraction: float, round_to: int, folder: Path) -> tuple[Path, Path]:
    """A quarter or a half of every trimmable group removed (random scores), widths rounded."""
    _, graph = net_graph(deploy, allow_inexact=True)
    rng = np.random.default_rng(0)
    selections = {name: choose(name, rng.random(group.width), Rule("ratio", ratio=fraction, round_to=round_to),
                               group.blocks, group.parts) for name, group in trimmable(graph).items()}  # fmt: skip
    net, trimmed = folder / "deploy.prototxt", folder / "trimmed.caffemodel"
    cut([deploy], weights, selections, [net], trimmed, allow_inexact=True)
    return net, trimmed


DEPLOYED = ("opencv", "onnxruntime")  # timed on one thread: the deployment target


def one_net(name: str, tmp: Path, repeats: int, threads: int | None) -> list[dict[str, Any]]:
    """Every case of one net, timed against the original in one process: Caffe on every core
    (with where its time goes), OpenCV's DNN and ONNX Runtime on one thread."""
    (deploy,) = write(name, tmp / name, ["deploy"])
    weights = random_weights(deploy, tmp / name / "random.caffemodel")
    cases = [(f, r) for f in FRACTIONS for r in ROUNDINGS]
    nets = [cut_case(deploy, weights, f, r, tmp / name / f"{f}-{r}") for f, r in cases]
    most = threads or os.cpu_count() or 1
    cost = compare_cost((deploy, weights), nets, repeats, most, [1, 8], True, ("caffe",), [most])
    deployed = compare_cost((deploy, weights), nets, repeats, 1, [1, 8], False, DEPLOYED, [1])
    out = []
    for (fraction, round_to), entry, other in zip(cases, cost["nets"], deployed["nets"], strict=True):
        row = {"net": name, "fraction": fraction, "round_to": round_to, "macs_ratio": entry["macs_ratio"],
               "params_ratio": entry["params_ratio"]}  # fmt: skip
        for batch in (1, 8):
            row[f"time_ratio_batch{batch}"] = entry[f"speedup_batch{batch}"]
            row[f"efficiency_batch{batch}"] = entry[f"speedup_batch{batch}"] / entry["macs_ratio"]
            row[f"mac_layers_efficiency_batch{batch}"] = entry[f"mac_layers_speedup_batch{batch}"] / entry["macs_ratio"]
            row[f"other_layers_time_ratio_batch{batch}"] = entry[f"other_layers_speedup_batch{batch}"]
            row[f"other_layers_share_batch{batch}"] = entry[f"other_layers_share_batch{batch}"]
            for runtime in DEPLOYED:
                speed = other["runtimes"][runtime]["threads1"][str(batch)]
                value = speed.get("speedup")
                row[f"{runtime}_time_ratio_batch{batch}"] = value
                row[f"{runtime}_efficiency_batch{batch}"] = None if value is None else value / entry["macs_ratio"]
                row[f"{runtime}_doubt_batch{batch}"] = speed.get("doubt") or speed.get("refused")
        out.append(row)
    return out


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per rounding and batch: the median and the lowest efficiency over nets and cut sizes, in
    Caffe and (`<runtime>_...`) in each deployed runtime, and what rounding buys (rounding_8)."""
    found: dict[str, Any] = {}
    for round_to in ROUNDINGS:
        chosen = [r for r in rows if r["round_to"] == round_to]
        place = found.setdefault(f"round_to_{round_to}", {})
        for batch in (1, 8):
            for prefix in ("", *(f"{runtime}_" for runtime in DEPLOYED)):
                values = [r[f"{prefix}efficiency_batch{batch}"] for r in chosen
                          if r.get(f"{prefix}efficiency_batch{batch}") is not None]  # fmt: skip
                place[f"{prefix}median_efficiency_batch{batch}"] = statistics.median(values) if values else None
                place[f"{prefix}min_efficiency_batch{batch}"] = min(values) if values else None
            place[f"median_mac_layers_efficiency_batch{batch}"] = statistics.median(
                r.get(f"mac_layers_efficiency_batch{batch}", float("nan")) for r in chosen)  # fmt: skip
    found["rounding_8"] = rounding_gain(rows)
    return found


def rounding_gain(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What round_to 8 buys: the median efficiency gain over the cases where rounding changed
    the widths, against the noise, the largest difference between the two timings of a case
    where it changed nothing (the same widths timed twice). `better`: whether the gain
    exceeds the noise at both batch sizes."""
    found: dict[str, Any] = {}
    pairs = [(a, b) for a in rows for b in rows if a["round_to"] == 1 and b["round_to"] == 8
             and (a["net"], a["fraction"]) == (b["net"], b["fraction"])]  # fmt: skip
    for batch in (1, 8):
        key = f"efficiency_batch{batch}"
        changed = [b[key] - a[key] for a, b in pairs if b["params_ratio"] != a["params_ratio"]]
        same = [abs(b[key] - a[key]) for a, b in pairs if b["params_ratio"] == a["params_ratio"]]
        found[f"median_gain_batch{batch}"] = statistics.median(changed) if changed else None
        found[f"noise_batch{batch}"] = max(same) if same else None
    found["better"] = all(
        found[f"median_gain_batch{b}"] is not None and found[f"noise_batch{b}"] is not None
        and found[f"median_gain_batch{b}"] > found[f"noise_batch{b}"] for b in (1, 8))  # fmt: skip
    return found


def bench_speed(nets: list[str], repeats: int, threads: int | None, log: Callable[[str], None] = print) -> dict:
    """The cases of every net, their summary, and what they were timed with."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pytrim-speed-") as tmp:
        for name in nets:
            log(f"{name}: cutting and timing {len(FRACTIONS) * len(ROUNDINGS)} cases at batch 1 and 8")
            rows += one_net(name, Path(tmp), repeats, threads)
            for row in rows[-len(FRACTIONS) * len(ROUNDINGS) :]:
                log(
                    f"  {row['fraction']:.2f} round_to {row['round_to']}: MACs {row['macs_ratio']:.2f}x, time "
                    f"{row['time_ratio_batch1']:.2f}x (batch 1), {row['time_ratio_batch8']:.2f}x (batch 8)"
                )
    used = threads or os.cpu_count()
    return {"cases": rows, "summary": summary(rows), "repeats": repeats, **blas_config(), "threads": used,
            "provenance": provenance()}  # fmt: skip
