"""bench-peers' table: one row per net, method, importance and MACs target (runs/bench/peers.json
and peers.md), from what the run measured.

Per row: the MACs and parameter ratios to the baseline (> 1: smaller), test top-1 and its
paired difference to Caffe's baseline with the standard error (several seeds: the per-image
correctness averaged over the seeds, then paired), the wall time of the whole run up to that
net, the ONNX Runtime latency ratios at batch 1 and 8 (original / pruned), and the
fine-tuning budget spent (images seen over all steps, batch, policy). `verdicts` set pytrim's
result beside each Torch-Pruning importance at the matched MACs: the paired difference
pytrim - Torch-Pruning on the test images, and "ahead", "behind" or "level" (within two
standard errors).
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from pytrim.stats.evaluate import Scores, paired

LEVEL_SE = 2.0


def correctness(path: str) -> np.ndarray:
    with np.load(path) as stored:
        return np.asarray(stored["correct"] if "correct" in stored else stored["values"], np.float64)


def against(base: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """Paired difference other - base over the same test images, and its standard error."""
    return paired(Scores(base, np.ones(base.size)), Scores(other, np.ones(other.size)))


def spent(budgets: list[dict[str, Any]]) -> dict[str, Any]:
    """A run's fine-tuning budget in one entry: images seen over all its steps, per step."""
    first = budgets[0] if budgets else {}
    keys = ("batch", "lr_policy", "base_lr", "momentum", "weight_decay", "gamma", "power")
    return {"steps": len(budgets), "iterations_per_step": [b["iterations"] for b in budgets],
            "images_seen": sum(b["images_seen"] for b in budgets), **{k: first.get(k) for k in keys}}  # fmt: skip


def pytrim_rows(net: dict[str, Any], base: np.ndarray) -> list[dict[str, Any]]:
    """pytrim's result (the last accepted iteration) and its next iteration, if it ran one."""
    loop, rows = net["loop"], []
    final = loop["final"]["iteration"]
    for number in (final, final + 1):
        if number < 1 or number > len(loop["iterations"]):
            continue
        it, record = loop["iterations"][number - 1], net["state_iterations"][number - 1]
        mine = correctness(record["test_scores"])
        difference, stderr = against(base, mine)
        rows.append({"net": net["net"], "method": "pytrim", "importance": "apoz", "step": number,
                     "target": "result" if number == final else "one further (not accepted)",
                     "macs_ratio": it["cost"]["macs_ratio"], "params_ratio": it["compression"],
                     "test_top1": float(mine.mean()), "test_difference": difference, "test_difference_stderr": stderr,
                     "seeds": [], "wall_seconds": net["loop"]["seconds"], "accepted": it["accepted"],
                     "widths": it["widths"], "budget": spent(net["plan"]["budgets"][:number]),
                     "latency": net["latency"].get("pytrim" if number == final else "pytrim-next", {}),
                     "latency_twin_export": net["latency"].get("pytrim-twin" if number == final
                                                               else "pytrim-next-twin", {}),
                     "cpu_seconds": net["loop"]["cpu_seconds"]})  # fmt: skip
    return rows


def torch_rows(net: dict[str, Any], base: np.ndarray) -> list[dict[str, Any]]:
    """Torch-Pruning per importance at the matched step and one step further, over the seeds."""
    rows, matched = [], net["plan"]["matched"]
    by_criterion: dict[str, list[dict[str, Any]]] = {}
    for result in net["results"]:
        by_criterion.setdefault(result["importance"], []).append(result)
    for criterion, results in by_criterion.items():
        for number in (matched, matched + 1):
            if number < 1:
                continue
            steps = [r["steps"][number - 1] for r in results]
            folders = [r["folder"] for r in results]
            each = [correctness(f"{folder}/test-{number:02d}.npz") for folder in folders]
            mean_correct = np.mean(each, axis=0)
            difference, stderr = against(base, mean_correct)
            rows.append({"net": net["net"], "method": "torch-pruning", "importance": criterion, "step": number,
                         "target": "matched" if number == matched else "one further",
                         "macs_ratio": statistics.mean(s["macs_ratio"] for s in steps),
                         "params_ratio": statistics.mean(s["params_ratio"] for s in steps),
                         "test_top1": float(mean_correct.mean()), "test_difference": difference,
                         "test_difference_stderr": stderr, "seeds": [r["seed"] for r in results],
                         "test_top1_per_seed": [s["test_top1"] for s in steps],
                         "seed_std": statistics.stdev(s["test_top1"] for s in steps) if len(steps) > 1 else None,
                         "wall_seconds": statistics.mean(s["seconds_so_far"] for s in steps),
                         "cpu_seconds": statistics.mean(s["cpu_seconds_so_far"] for s in steps),
                         "widths": steps[0]["widths"], "kept": [s["kept"] for s in steps],
                         "budget": spent([results[0]["steps"][i]["budget"] for i in range(number)]),
                         "latency": net["latency"].get(f"{criterion}-{number}", {}),
                         "correct": mean_correct})  # fmt: skip
    return rows


def verdicts(pytrim: list[dict[str, Any]], torch: list[dict[str, Any]], final: np.ndarray | None) -> list[dict]:
    """pytrim's result against each importance at the matched MACs (paired on the test images)."""
    out = []
    for row in torch:
        if row["target"] != "matched" or final is None:
            continue
        difference, stderr = against(row["correct"], final)
        verdict = "level" if abs(difference) <= LEVEL_SE * stderr else "ahead" if difference > 0 else "behind"
        out.append({"net": row["net"], "importance": row["importance"], "pytrim_minus_torch_pruning": difference,
                    "stderr": stderr, "verdict": verdict, "pytrim_macs_ratio": pytrim[0]["macs_ratio"],
                    "torch_pruning_macs_ratio": row["macs_ratio"]})  # fmt: skip
    return out


def net_rows(net: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows of one net and its verdicts (the per-image vectors dropped from the rows)."""
    base = correctness(net["state_baseline"]["test_scores"])
    mine, theirs = pytrim_rows(net, base), torch_rows(net, base)
    final = net["loop"]["final"]["iteration"]
    final_correct = correctness(net["state_iterations"][final - 1]["test_scores"]) if final else None
    found = verdicts(mine, theirs, final_correct)
    for row in theirs:
        row.pop("correct")
    return mine + theirs, found


def budgets_equal(net: dict[str, Any]) -> bool:
    """Torch-Pruning's step budgets are pytrim's iterations' as the loop ran them (iterations, base_lr)."""
    for number, budget in enumerate(net["plan"]["budgets"][: net["plan"]["matched"]], 1):
        ran = net["state_iterations"][number - 1].get("steps", {}).get("retrain", {}).get("result", {})
        if ran.get("iterations") != budget["iterations"] or ran.get("base_lr") != budget["base_lr"]:
            return False
    return all(step["budget"] == net["plan"]["budgets"][i] for r in net["results"] for i, step in enumerate(r["steps"]))


def seconds(value: float | None) -> str:
    if value is None:
        return ""
    minutes, rest = divmod(round(value), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def markdown(result: dict[str, Any]) -> str:
    """peers.md: a title and the tables."""
    return "# pytrim and Torch-Pruning on the same nets\n\n" + table(result)


def table(result: dict[str, Any]) -> str:
    """The rows, the verdicts, and per net the twin's check and the budgets (docs/peers.md's
    recorded block is this)."""
    head = ["net", "method", "importance", "step", "MACs", "params", "test top-1", "vs baseline (paired)", "seeds",
            "wall time", "ONNX latency b1 / b8", "fine-tuning"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        lat = r["latency"] or r.get("latency_twin_export") or {}
        twin = " (twin)" if not r["latency"] and lat else ""
        latency = f"{ratio(lat.get('ratio_batch1'))} / {ratio(lat.get('ratio_batch8'))}{twin}" if lat else ""
        b = r["budget"]
        cells = [r["net"], r["method"], r["importance"], f"{r['step']} ({r['target']})", ratio(r["macs_ratio"]),
                 ratio(r["params_ratio"]), f"{r['test_top1']:.2%}",
                 f"{100 * r['test_difference']:+.2f} ± {100 * r['test_difference_stderr']:.2f}",
                 ",".join(map(str, r["seeds"])) or "-", seconds(r["wall_seconds"]), latency,
                 f"{b['images_seen']:,} images ({b['steps']} x {b['iterations_per_step'][-1]} it x {b['batch']}), "
                 f"{b['lr_policy']} from {b['base_lr']:g}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| net | importance | pytrim - Torch-Pruning (points, paired) | verdict |", "|---|---|---|---|"]
    for v in result["verdicts"]:
        lines.append(f"| {v['net']} | {v['importance']} | {100 * v['pytrim_minus_torch_pruning']:+.2f} ± "
                     f"{100 * v['stderr']:.2f} | {v['verdict']} |")  # fmt: skip
    lines += ["", "| net | twin max abs diff | max rel diff | budgets equal | baseline top-1 | pytrim's loop |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for n in result["nets"]:
        lines.append(f"| {n['net']} | {n['twin']['max_abs_diff']:.2e} | {n['twin']['max_rel_diff']:.2e} | "
                     f"{n['budgets_equal']} | {n['baseline_top1']:.2%} | {seconds(n['pytrim_seconds'])} |")  # fmt: skip
    return "\n".join(lines) + "\n"
