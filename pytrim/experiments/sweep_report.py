"""The criteria sweep's report: per net, criterion and point the mean and spread over the
seeds (report.json, report.md) and the accuracy-against-compression curves
(accuracy_vs_compression.png)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.env import pinned_machine
from pytrim.core.files import provenance, together, write_atomic, write_json
from pytrim.experiments.sweep_tasks import Settings

REPORT_NOTE = (
    "Statistics come from a random sample of training images; the validation split (held out from the "
    "training images) chooses the retraining checkpoints; the test set gives only the numbers reported."
)


def summary(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per net, criterion and point: the mean and spread (standard deviation) over the seeds."""
    groups: dict[tuple, list[dict]] = {}
    for e in entries:
        groups.setdefault((e["net"], e["criterion"], e["point"]), []).append(e)
    rows = []
    for (net, criterion, point), runs in groups.items():
        top1 = np.array([r["top1"] for r in runs])
        compression = np.array([r["compression"] for r in runs])
        rows.append({"net": net, "criterion": criterion, "point": point, "seeds": len(runs),
                     "compression": float(compression.mean()), "compression_std": float(compression.std()),
                     "top1": float(top1.mean()), "top1_std": float(top1.std()),
                     "top1_before": float(np.mean([r["top1_before"] for r in runs])),
                     "verified": verified_of(runs)})  # fmt: skip
    return rows


def verified_of(runs: list[dict[str, Any]]) -> bool | None:
    """True when every physical cut of the seeds verified; None when no seed cut anything
    physically (magnitude: masks only)."""
    checked = [r["verified"] for r in runs if r["verified"] is not None]
    return all(checked) if checked else None


VERIFIED = {True: "yes", False: "NO", None: "no cut (masks)"}


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = ["# Pruning criteria compared", "", REPORT_NOTE, "",
             f"Every point is retrained {s['budget']} solver iterations (iterative criteria: {s['rounds']} rounds "
             f"within that budget), over {len(s['seeds'])} seeds; mean ± standard deviation over the seeds. "
             "Compression = baseline parameters / non-zero parameters. Unit criteria are cut physically and every cut "
             "is verified.", ""]  # fmt: skip
    for net, base in report["baselines"].items():
        lines.append(f"{net}: baseline {base['params']:,} parameters, test top-1 {base['top1']:.2%}.")
    lines += ["", "| Net | Criterion | Point | Compression | Top-1 before retraining | Top-1 | Verified |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in report["summary"]:
        lines.append(
            f"| {r['net']} | {r['criterion']} | {r['point']:g} | {r['compression']:.2f}x ± {r['compression_std']:.2f} "
            f"| {r['top1_before']:.2%} | {100 * r['top1']:.2f}% ± {100 * r['top1_std']:.2f} "
            f"| {VERIFIED[r['verified']]} |"
        )
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> Path:
    """Top-1 after retraining against compression: one curve per criterion (error bars: the
    spread over the seeds), one panel per net."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = list(report["baselines"])
    fig, axes = plt.subplots(1, len(nets), figsize=(6.5 * len(nets), 4.4), squeeze=False)
    for ax, net in zip(axes[0], nets, strict=True):
        if not any(r["net"] == net for r in report["summary"]):
            ax.set(title=f"{net}: no task finished yet")
            continue
        for criterion in dict.fromkeys(r["criterion"] for r in report["summary"]):
            rows = sorted((r for r in report["summary"] if r["net"] == net and r["criterion"] == criterion),
                          key=lambda r: r["compression"])  # fmt: skip
            ax.errorbar([r["compression"] for r in rows], [100 * r["top1"] for r in rows],
                        yerr=[100 * r["top1_std"] for r in rows], marker="o", capsize=3, label=criterion)  # fmt: skip
        ax.axhline(100 * report["baselines"][net]["top1"], color="grey", linestyle="--", label="baseline")
        ax.set(xscale="log", xlabel="compression (baseline / non-zero parameters)", ylabel="test top-1 (%)", title=net)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with together([path]) as (partial,):
        fig.savefig(partial, dpi=100, format="png")
    plt.close(fig)
    return path


def write_report(entries: list[dict], bases: dict, settings: Settings, out: Path, failed: list | None = None) -> dict:
    report = {"note": REPORT_NOTE, "settings": asdict(settings), "baselines": bases, "entries": entries,
              "summary": summary(entries), "failed": failed or [], "machine": pinned_machine(),
              "provenance": provenance()}  # fmt: skip
    write_json(out / "report.json", report)
    write_atomic(out / "report.md", markdown(report))
    plot(report, out / "accuracy_vs_compression.png")
    return report
