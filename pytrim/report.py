"""Report a trimming run: the paper's table, printed and written as report.md and report.json.

report.json keys: baseline {widths, params, top1}; iterations [{iteration, widths, params,
compression, top1_trimmed, top1_retrained, mean_apoz}]; scratch {widths, params, top1};
plus final (the accepted iteration) and timings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytrim.files import write_atomic, write_json

ITERATION_KEYS = (
    "iteration",
    "layers",
    "widths",
    "params",
    "compression",
    "top1_trimmed",
    "top1_trimmed_nofold",
    "top1_retrained",
    "top5_trimmed",
    "top5_retrained",
    "mean_apoz",
    "verify_max_relative_diff",
    "stopped",
)


def final_record(state: dict[str, Any]) -> dict[str, Any]:
    """The accepted result: the last iteration within tolerance, or the baseline."""
    accepted = state.get("final_iteration", 0)
    return state["iterations"][accepted - 1] if accepted else state["baseline"]


def iteration_entries(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The finished iterations of this run (records beyond its last iteration, kept from a
    longer earlier run, are not part of it)."""
    last = state.get("last_iteration", len(state["iterations"]))
    entries = []
    for record in state["iterations"][:last]:
        if "top1_retrained" in record:
            entry = {key: record.get(key) for key in ITERATION_KEYS}
            entry["compression"] = round(record["compression"], 4)
            entry["seconds"] = {name: step["seconds"] for name, step in record.get("steps", {}).items()}
            entries.append(entry)
    return entries


def build(state: dict[str, Any]) -> dict[str, Any]:
    """The report's JSON from a loop's state."""
    base = state["baseline"]
    report: dict[str, Any] = {
        "baseline": {key: base.get(key) for key in ("widths", "params", "top1", "top5", "images")},
        "iterations": iteration_entries(state),
        "scratch": {},
    }
    final = final_record(state)
    report["final"] = {
        "iteration": state.get("final_iteration", 0),
        "widths": final["widths"],
        "params": final["params"],
        "compression": round(base["params"] / final["params"], 4),
        "top1": final.get("top1_retrained", final.get("top1")),
    }
    scratch = state.get("scratch") or {}
    if "top1" in scratch and state.get("final_iteration") and scratch.get("widths") == final["widths"]:
        report["scratch"] = {key: scratch[key] for key in ("widths", "params", "top1", "iterations")}
        report["inherited_minus_scratch_top1"] = report["final"]["top1"] - scratch["top1"]
    return report


def pct(value: float | None) -> str:
    return "" if value is None else f"{value:.2%}"


def markdown(report: dict[str, Any], title: str, top5: bool = False) -> str:
    """The paper's table form (with top-5 columns for ImageNet nets)."""
    base = report["baseline"]
    first = report["iterations"][0]["mean_apoz"] if report["iterations"] else {}
    layers = sorted({n for it in report["iterations"] for n in it["mean_apoz"]}, key=list(first).index)
    fold = any(it.get("top1_trimmed_nofold") is not None for it in report["iterations"])
    head = ["Network", "Widths", "Parameters", "Compression", "Top-1 after cut", "Top-1 after retraining"]
    head += ["Top-1 after cut, means not folded"] if fold else []
    head += ["Top-5 after cut", "Top-5 after retraining"] if top5 else []
    head += [f"mean APoZ {name}" for name in layers]

    def row(name: str, entry: dict, compression: str, accuracy: list[float | None], apoz: dict) -> list[str]:
        cells = [name, entry["widths"], f"{entry['params']:,}", compression]
        cells += [pct(a) for a in (accuracy if top5 else accuracy[:2])]
        cells += [pct(entry.get("top1_trimmed_nofold"))] if fold else []
        return cells + [pct(apoz.get(n)) for n in layers]

    rows = [row("Original", base, "1.00x", [None, base["top1"], None, base.get("top5")], {})]
    for it in report["iterations"]:
        mark = " (stopped)" if it.get("stopped") else ""
        accuracy = [it["top1_trimmed"], it["top1_retrained"], it.get("top5_trimmed"), it.get("top5_retrained")]
        rows.append(row(f"Trim-{it['iteration']}{mark}", it, f"{it['compression']:.2f}x", accuracy, it["mean_apoz"]))
    scratch = report.get("scratch") or {}
    if scratch:
        compression = f"{base['params'] / scratch['params']:.2f}x"
        rows.append(
            row(f"Scratch ({scratch['iterations']} it.)", scratch, compression, [None, scratch["top1"], None, None], {})
        )
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    final = report["final"]
    lines += [
        "",
        f"Result: iteration {final['iteration']}, {final['widths']}, {final['params']:,} parameters, "
        f"{final['compression']:.2f}x compression, top-1 {final['top1']:.2%} "
        f"(baseline {base['top1']:.2%}, {100 * (final['top1'] - base['top1']):+.2f} points).",
    ]
    if scratch:
        diff = 100 * report["inherited_minus_scratch_top1"]
        verdict = "beat" if diff > 0 else "did not beat"
        lines.append(
            f"Inheriting the surviving weights {verdict} training the same widths from scratch: "
            f"{final['top1']:.2%} vs {scratch['top1']:.2%} ({diff:+.2f} points)."
        )
    lines.append("Mean APoZ is measured at the start of each iteration (before its cut).")
    return "\n".join(lines) + "\n"


def write(state: dict[str, Any], out_dir: str | Path, title: str, top5: bool = False) -> dict[str, Any]:
    """Write report.json and report.md into `out_dir`; return the report."""
    out_dir = Path(out_dir)
    report = build(state)
    write_json(out_dir / "report.json", report)
    write_atomic(out_dir / "report.md", markdown(report, title, top5))
    return report
