"""Report a trimming run: the paper's table (report.md), report.json, and the paper's figures:
test accuracy against retraining iterations for each trimming iteration
(accuracy_vs_retraining.png) and the APoZ histograms of the trimmed layers across iterations,
the final net's included (apoz_histograms.png).

report.json: `baseline` {widths, params, top1, top1_stderr, top5, images, val_top1};
`iterations` [{iteration, layers, widths, params, compression, top1_trimmed, top1_retrained,
val_top1_trimmed, val_top1_retrained, kept, top1, val_top1 (of the kept weights), top1_stderr,
drop_within_noise, mean_apoz, verify_max_relative_diff, stopped, curve, seconds}]; `final` {iteration, widths, params,
compression, top1, mean_apoz}; `scratch` {widths, params, top1, iterations, mean_apoz};
`inherited_minus_scratch_top1`; `decisions_on` ("validation" or "test").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytrim.core.files import together, write_atomic, write_json
from pytrim.stats.statsfile import load_stats

ITERATION_KEYS = (
    "iteration", "layers", "widths", "params", "compression", "top1_trimmed", "top1_trimmed_nofold",
    "top1_retrained", "top5_trimmed", "top5_retrained", "val_top1_trimmed", "val_top1_retrained", "kept", "top1",
    "val_top1", "top1_stderr", "drop_within_noise", "mean_apoz", "verify_max_relative_diff", "stopped", "curve",
)  # fmt: skip


def iteration_entries(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The finished iterations of this run (records beyond its last iteration, kept from a
    longer earlier run, are not part of it)."""
    last = state.get("last_iteration", len(state["iterations"]))
    entries = []
    for record in state["iterations"][:last]:
        if "kept" in record:
            entry = {key: record.get(key) for key in ITERATION_KEYS}
            entry["compression"] = round(record["compression"], 4)
            entry["seconds"] = {name: step["seconds"] for name, step in record.get("steps", {}).items()}
            entries.append(entry)
    return entries


def build(state: dict[str, Any], val: bool) -> dict[str, Any]:
    """The report's JSON from a loop's state."""
    base = state["baseline"]
    keys = ("widths", "params", "top1", "top1_stderr", "top5", "images", "val_top1")
    report: dict[str, Any] = {"baseline": {key: base.get(key) for key in keys}, "iterations": iteration_entries(state)}
    accepted = state.get("final_iteration", 0)
    final = state["iterations"][accepted - 1] if accepted else base
    report["final"] = {
        "iteration": accepted,
        "widths": final["widths"],
        "params": final["params"],
        "compression": round(base["params"] / final["params"], 4),
        "top1": final["top1"],
        "mean_apoz": (state.get("final") or {}).get("mean_apoz") if accepted else None,
    }
    report["scratch"] = {}
    scratch = state.get("scratch") or {}
    if "top1" in scratch and accepted and scratch.get("widths") == final["widths"]:
        keys = ("widths", "params", "top1", "top1_stderr", "iterations", "mean_apoz")
        report["scratch"] = {key: scratch.get(key) for key in keys}
        report["inherited_minus_scratch_top1"] = report["final"]["top1"] - scratch["top1"]
    report["decisions_on"] = "validation" if val else "test"
    return report


def pct(value: float | None) -> str:
    return "" if value is None else f"{value:.2%}"


def table_rows(report: dict[str, Any], layers: list[str], top5: bool, fold: bool) -> list[list[str]]:
    base = report["baseline"]

    def row(name: str, e: dict, compression: str, accuracy: list, kept: str, apoz: dict) -> list[str]:
        cells = [name, e["widths"], f"{e['params']:,}", compression]
        cells += [pct(a) for a in (accuracy if top5 else accuracy[:2])]
        cells += [pct(e.get("top1_trimmed_nofold"))] if fold else []
        stderr = f" ± {100 * e['top1_stderr']:.2f}" if e.get("top1_stderr") is not None else ""
        cells += [kept, f"{pct(e['top1'])}{stderr}", pct(e.get("val_top1"))]
        return cells + [pct(apoz.get(n)) for n in layers]

    rows = [row("Original", base, "1.00x", [None, base["top1"], None, base.get("top5")], "", {})]
    for it in report["iterations"]:
        mark = " (stopped)" if it.get("stopped") else ""
        accuracy = [it["top1_trimmed"], it["top1_retrained"], it.get("top5_trimmed"), it.get("top5_retrained")]
        name, compression = f"Trim-{it['iteration']}{mark}", f"{it['compression']:.2f}x"
        rows.append(row(name, it, compression, accuracy, it["kept"], it["mean_apoz"]))
    final, scratch = report["final"], report.get("scratch") or {}
    if final.get("mean_apoz"):
        rows.append(row("Final net", final, f"{final['compression']:.2f}x", [None] * 4, "", final["mean_apoz"]))
    if scratch:
        compression = f"{base['params'] / scratch['params']:.2f}x"
        rows.append(row(f"Scratch ({scratch['iterations']} it.)", scratch, compression, [None] * 4, "",
                        scratch.get("mean_apoz") or {}))  # fmt: skip
    return rows


def markdown(report: dict[str, Any], title: str, top5: bool = False) -> str:
    """The paper's table form (with top-5 columns for ImageNet nets)."""
    base, final = report["baseline"], report["final"]
    layers = list(dict.fromkeys(n for it in report["iterations"] for n in it["mean_apoz"]))
    head = ["Network", "Widths", "Parameters", "Compression", "Top-1 after cut", "Top-1 after retraining"]
    head += ["Top-5 after cut", "Top-5 after retraining"] if top5 else []
    fold = any(it.get("top1_trimmed_nofold") is not None for it in report["iterations"])
    head += ["Top-1 after cut, means not folded"] if fold else []
    head += ["Kept", "Top-1 of the kept weights", "Validation top-1"] + [f"mean APoZ {name}" for name in layers]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(report, layers, top5, fold)]
    lines += ["", notes(report)]
    lines.append(
        f"Result: iteration {final['iteration']}, {final['widths']}, {final['params']:,} parameters, "
        f"{final['compression']:.2f}x compression, top-1 {final['top1']:.2%} "
        f"(baseline {base['top1']:.2%}, {100 * (final['top1'] - base['top1']):+.2f} points)."
    )
    scratch = report.get("scratch") or {}
    if scratch:
        diff = 100 * report["inherited_minus_scratch_top1"]
        verdict = "beat" if diff > 0 else "did not beat"
        lines.append(
            f"Inheriting the surviving weights {verdict} training the same widths from scratch: "
            f"{final['top1']:.2%} vs {scratch['top1']:.2%} ({diff:+.2f} points)."
        )
    return "\n".join(lines) + "\n"


def notes(report: dict[str, Any]) -> str:
    """What the numbers are measured on, and which differences are within noise."""
    if report["decisions_on"] == "validation":
        text = ("Each iteration keeps the better of its cut and retrained weights on the validation split, and the "
                "stop rule reads the validation split too; top-1 in the table is on the test set, which no decision "
                "sees. ")  # fmt: skip
    else:
        text = "No validation split was given: decisions were made on the test set it reports. "
    text += "± is one standard error of top-1 over the test images. Mean APoZ is measured before each iteration's cut."
    within = [str(it["iteration"]) for it in report["iterations"] if it.get("drop_within_noise")]
    if within:
        text += f" The difference to the baseline is within one standard error for Trim-{', Trim-'.join(within)}."
    return text


def curves(report: dict[str, Any], path: Path) -> Path | None:
    """Test top-1 against retraining iterations, one line per trimming iteration."""
    lines = [(it["iteration"], it["curve"]) for it in report["iterations"] if it.get("curve")]
    if not lines:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for number, curve in lines:
        points = sorted((int(k), v.get("accuracy")) for k, v in curve.items() if v.get("accuracy") is not None)
        ax.plot([p[0] for p in points], [100 * p[1] for p in points], marker=".", label=f"Trim-{number}")
    ax.axhline(100 * report["baseline"]["top1"], color="grey", linestyle="--", label="original")
    ax.set(xlabel="retraining iteration", ylabel="test top-1 (%)", title="Accuracy while retraining")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, path)


def histograms(out_dir: Path, report: dict[str, Any], path: Path) -> Path | None:
    """For each trimmed layer, its APoZ distribution at every iteration and in the final net."""
    sources = [(f"Trim-{it['iteration']} (before its cut)", out_dir / f"iter-{it['iteration']:02d}/stats.h5")
               for it in report["iterations"]] + [("final net", out_dir / "final/stats.h5")]  # fmt: skip
    stats = [(label, load_stats(p)) for label, p in sources if p.is_file()]
    layers = list(dict.fromkeys(n for it in report["iterations"] for n in it["layers"]))
    if not stats or not layers:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(layers), figsize=(5 * len(layers), 3.6), squeeze=False)
    for ax, layer in zip(axes[0], layers, strict=True):
        for label, s in stats:
            ax.hist(100 * s.find(layer).apoz, bins=40, range=(0, 100), histtype="step", label=label)
        ax.set(xlabel="APoZ (%)", ylabel="neurons", title=layer)
    axes[0][0].legend(fontsize=7)
    return save(fig, path)


def save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with together([path]) as (partial,):
        fig.savefig(partial, dpi=90, format="png")
    plt.close(fig)
    return path


def write(state: dict[str, Any], out_dir: str | Path, title: str, top5: bool = False, val: bool = False) -> dict:
    """Write report.json, report.md and the figures into `out_dir`; return the report."""
    out_dir = Path(out_dir)
    report = build(state, val)
    write_json(out_dir / "report.json", report)
    write_atomic(out_dir / "report.md", markdown(report, title, top5))
    curves(report, out_dir / "accuracy_vs_retraining.png")
    histograms(out_dir, report, out_dir / "apoz_histograms.png")
    return report
