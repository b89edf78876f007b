"""Report a trimming run: the paper's table (report.md), report.json, and the paper's figures:
test accuracy against retraining iterations for each trimming iteration
(accuracy_vs_retraining.png) and the APoZ histograms of the trimmed layers across iterations,
the final net's included (apoz_histograms.png).

report.json: `baseline` {widths, params, top1, top1_stderr, top5, images, val_top1, value,
stderr, machine}; `iterations` [{iteration, layers, plan, widths, params, compression, cost
(params/MACs/bytes ratios, speedup_batch1/speedup_batchN), top1_trimmed, top1_retrained,
value_trimmed, value_retrained, kept, top1, val_top1, value, difference, difference_stderr (on
the deciding split), test_difference, test_difference_stderr (on the test set: reported, never
deciding), loss, loss_stderr, accepted, stopped, mean_apoz, verify_max_relative_diff, curve,
seconds}]; `final` {iteration, widths, params, compression, top1, value, cost,
test_difference, test_difference_stderr, mean_apoz}; `scratch`
{widths, params, top1, value, iterations, mean_apoz}; `inherited_minus_scratch_top1`;
`metric`, `tolerance`, `decisions_on` ("validation" or "test").
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pytrim.core.files import provenance, together, write_atomic, write_json
from pytrim.stats.cost import IMPLAUSIBLE, UNSTEADY, speedups
from pytrim.stats.evaluate import ACCURACY
from pytrim.stats.statsfile import load_stats

ITERATION_KEYS = (
    "iteration", "try", "label", "why_try", "retraining", "layers", "plan", "widths", "params", "compression",
    "cost", "top1_trimmed", "top1_trimmed_nofold", "top1_retrained", "top5_trimmed", "top5_retrained",
    "value_trimmed", "value_retrained", "val_top1_trimmed", "val_top1_retrained", "kept", "top1", "val_top1",
    "top1_stderr", "value", "val_value", "difference", "difference_stderr", "test_difference",
    "test_difference_stderr", "loss", "loss_stderr", "accepted", "mean_apoz", "verify_max_relative_diff",
    "stopped", "curve",
)  # fmt: skip


def iteration_entries(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The tries of this run, in the order they were made (records kept from a longer or other
    earlier run are not part of it)."""
    tried = {(number, letter) for number, letter in state.get("tried", [])}
    entries = []
    for record in state["iterations"]:
        if (record["iteration"], record.get("try", "a")) in tried and "accepted" in record:
            entry = {key: record.get(key) for key in ITERATION_KEYS}
            entry["compression"] = round(record["compression"], 4)
            entry["seconds"] = {name: step["seconds"] for name, step in record.get("steps", {}).items()}
            entries.append(entry)
    order = {tuple(pair): i for i, pair in enumerate(state.get("tried", []))}
    return sorted(entries, key=lambda e: order[(e["iteration"], e["try"])])


def result_record(state: dict[str, Any]) -> dict[str, Any] | None:
    """The accepted try the run's result is (None: the baseline)."""
    label = state.get("result_label")
    return next((r for r in state["iterations"] if label and r.get("label") == label), None)


def build(state: dict[str, Any], val: bool, metric: str = ACCURACY, tolerance: float | None = None) -> dict:
    """The report's JSON from a loop's state."""
    base = state["baseline"]
    keys = ("widths", "params", "top1", "top1_stderr", "top5", "images", "val_top1", "value", "stderr", "machine")
    report: dict[str, Any] = {"baseline": {key: base.get(key) for key in keys}, "iterations": iteration_entries(state)}
    chosen = result_record(state)
    accepted = chosen["iteration"] if chosen else 0
    final = chosen or base
    report["final"] = {key: final.get(key) for key in ("widths", "params", "top1", "value", "cost", "test_difference",
                                                      "test_difference_stderr")}  # fmt: skip
    report["final"] |= {
        "iteration": accepted,
        "label": chosen["label"] if chosen else "baseline",
        "compression": round(base["params"] / final["params"], 4),
    }
    report["final"]["mean_apoz"] = (state.get("final") or {}).get("mean_apoz") if accepted else None
    report["final"]["onnx"] = (state.get("final") or {}).get("onnx") if accepted else None
    report["scratch"] = {}
    scratch = state.get("scratch") or {}
    if "value" in scratch and accepted and scratch.get("widths") == final["widths"]:
        keys = ("widths", "params", "top1", "top1_stderr", "value", "stderr", "iterations", "mean_apoz")
        report["scratch"] = {key: scratch.get(key) for key in keys}
        if scratch.get("top1") is not None:
            report["inherited_minus_scratch_top1"] = report["final"]["top1"] - scratch["top1"]
        report["inherited_minus_scratch_value"] = report["final"]["value"] - scratch["value"]
    report |= {"metric": metric, "tolerance": tolerance, "decisions_on": "validation" if val else "test"}
    return report


def pct(value: float | None) -> str:
    return "" if value is None else f"{value:.2%}"


def shown(value: float | None, metric: str) -> str:
    """A metric value as the table shows it (top-1 as a percentage)."""
    return pct(value) if metric == ACCURACY else ("" if value is None else f"{value:.4g}")


def signed(value: float, metric: str, stderr: float | None = None) -> str:
    """A difference of the metric (± its standard error) with a precision suited to its scale:
    top-1 in points with two decimals; any other metric to two significant digits of its
    standard error (of the value, without one), so a loss of 0.046 never reads "+0.00"."""
    if metric == ACCURACY:
        return f"{100 * value:+.2f}" + (f" ± {100 * stderr:.2f}" if stderr is not None else "")
    ref = abs(stderr) if stderr else abs(value)
    digits = 2 if not ref or not math.isfinite(ref) else min(12, max(0, 1 - math.floor(math.log10(ref))))
    return f"{value:+.{digits}f}" + (f" ± {stderr:.{digits}f}" if stderr is not None else "")


def ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


RUNTIME_COLUMNS = (("Caffe", "caffe", None), ("OpenCV DNN", "opencv", "threads1"),
                   ("ONNX Runtime", "onnxruntime", "threads1"))  # fmt: skip


def cost_cells(cost: dict[str, Any] | None) -> list[str]:
    """MACs ratio, then per runtime the forward-time speedups 'batch 1 / larger batch' ("?": not
    credible, pytrim.stats.cost.doubt; "n/a": the runtime could not run the net)."""
    cost = cost or {}
    cells = [ratio(cost.get("macs_ratio"))]
    for _, runtime, threads in RUNTIME_COLUMNS:
        found = speedups(cost, runtime, threads)
        cells.append(" / ".join("n/a" if value is None else ratio(value) + ("?" if why else "")
                                for _, value, why in found))  # fmt: skip
    return cells


def runtime_titles(report: dict[str, Any]) -> dict[str, str]:
    """Column titles that say the batch sizes and threads: 'Caffe b1 / b32 (2 threads)'."""
    costs = [it.get("cost") or {} for it in report["iterations"]]
    titles = {}
    for title, runtime, threads in RUNTIME_COLUMNS:
        batches = next((" / ".join(f"b{b}" for b, _, _ in found) for found in (speedups(c, runtime, threads)
                        for c in costs) if found), "")  # fmt: skip
        count = threads.removeprefix("threads") if threads else next((str(c["threads"]) for c in costs
                                                                       if "threads" in c), "?")  # fmt: skip
        titles[title] = f"{title} {batches} ({count} thread{'s' if count != '1' else ''})"
    return titles


def iteration_row(report: dict[str, Any], it: dict[str, Any]) -> dict[str, str]:
    """One iteration's cells, by column (pytrim.loop.report.header)."""
    m = report["metric"]
    macs, *speeds = cost_cells(it.get("cost"))
    row = {"Network": it["label"] + (f" ({it['why_try']})" if it.get("try", "a") != "a" else "")
                      + (" (stopped)" if it.get("stopped") else ""),
           "Widths": it["widths"], "Parameters": f"{it['params']:,}", "Compression": f"{it['compression']:.2f}x",
           "MACs": macs, **{title: cell for (title, _, _), cell in zip(RUNTIME_COLUMNS, speeds, strict=True)},
           "after cut": shown(it["value_trimmed"], m), "after retraining": shown(it["value_retrained"], m),
           "Top-5 after cut": pct(it.get("top5_trimmed")), "Top-5 after retraining": pct(it.get("top5_retrained")),
           "Top-1 after cut, means not folded": pct(it.get("top1_trimmed_nofold")), "Kept": it["kept"],
           "of the kept weights": shown(it["value"], m), "Accepted": "yes" if it["accepted"] else "no",
           "Paired difference": signed(it["difference"], m, it["difference_stderr"])}  # fmt: skip
    return row | {f"mean APoZ {n}": pct(v) for n, v in it["mean_apoz"].items()}


def table_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """The table's rows by column: the original, every iteration, the final net, from scratch."""
    base, m = report["baseline"], report["metric"]
    rows = [{"Network": "Original", "Widths": base["widths"], "Parameters": f"{base['params']:,}",
             "Compression": "1.00x", "MACs": "1.00x", **{title: "1.00x" for title, _, _ in RUNTIME_COLUMNS},
             "after retraining": shown(base["value"], m), "Top-5 after retraining": pct(base.get("top5")),
             "of the kept weights": shown(base["value"], m)}]  # fmt: skip
    rows += [iteration_row(report, it) for it in report["iterations"]]
    final, scratch = report["final"], report.get("scratch") or {}
    for title, entry in (("Final net", final), (f"Scratch ({scratch.get('iterations')} it.)", scratch)):
        if entry and entry.get("mean_apoz"):
            row = {"Network": title, "Widths": entry["widths"], "Parameters": f"{entry['params']:,}",
                   "Compression": f"{base['params'] / entry['params']:.2f}x"}  # fmt: skip
            row |= {"of the kept weights": shown(entry["value"], m)} if title != "Final net" else {}
            rows.append(row | {f"mean APoZ {n}": pct(v) for n, v in entry["mean_apoz"].items()})
    return rows


def header(report: dict[str, Any], layers: list[str], top5: bool, fold: bool) -> list[tuple[str, str]]:
    """(column key, column title) of the table."""
    m = "Top-1" if report["metric"] == ACCURACY else report["metric"]
    on = report["decisions_on"]
    keys = ["Network", "Widths", "Parameters", "Compression", "MACs", *(t for t, _, _ in RUNTIME_COLUMNS),
            "after cut", "after retraining"]  # fmt: skip
    keys += ["Top-5 after cut", "Top-5 after retraining"] if top5 else []
    keys += ["Top-1 after cut, means not folded"] if fold else []
    keys += ["Kept", "of the kept weights", "Paired difference", "Accepted"] + [f"mean APoZ {n}" for n in layers]
    titles = {"after cut": f"{m} after cut", "after retraining": f"{m} after retraining",
              "of the kept weights": f"{m} of the kept weights",
              "Paired difference": f"Paired difference on {on}"} | runtime_titles(report)  # fmt: skip
    return [(key, titles.get(key, key)) for key in keys]


def markdown(report: dict[str, Any], title: str, top5: bool = False) -> str:
    """The paper's table form (with top-5 columns for ImageNet nets), the plan, and the result."""
    layers = list(dict.fromkeys(n for it in report["iterations"] for n in it["mean_apoz"]))[:12]
    fold = any(it.get("top1_trimmed_nofold") is not None for it in report["iterations"])
    head = header(report, layers, top5, fold)
    lines = [f"# {title}", "", "| " + " | ".join(t for _, t in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row.get(key, "") for key, _ in head) + " |" for row in table_rows(report)]
    lines += ["", notes(report), "", *plan_lines(report), result_line(report)]
    return "\n".join(lines) + "\n"


def plan_lines(report: dict[str, Any]) -> list[str]:
    """Per iteration, the groups it trimmed and why (and those that dropped out)."""
    lines = []
    for it in report["iterations"]:
        plan = it.get("plan") or {}
        why = "; ".join(f"{name} ({reason})" for name, reason in (plan.get("why") or {}).items())
        dropped = ", ".join(plan.get("dropped") or {})
        lines.append(f"- {it['label']} trimmed {why or ', '.join(it['layers'])}"
                     + (f"; dropped out: {dropped} (the rule selects nothing)" if dropped else "") + ".")  # fmt: skip
    return [*lines, ""] if lines else []


def result_line(report: dict[str, Any]) -> str:
    base, final, m = report["baseline"], report["final"], report["metric"]
    text = (f"Result: {final['label']}, {final['widths']}, {final['params']:,} parameters, "
            f"{final['compression']:.2f}x compression")  # fmt: skip
    if final.get("cost"):
        text += f", {final['cost']['macs_ratio']:.2f}x fewer MACs"
    unit = " points" if m == ACCURACY else ""
    text += f", {m} {shown(final['value'], m)} (baseline {shown(base['value'], m)}, "
    if final.get("test_difference_stderr") is not None:  # paired with the baseline, image by image
        text += f"{signed(final['test_difference'], m, final['test_difference_stderr'])}{unit}, paired)."
    else:
        text += f"{signed(final['value'] - base['value'], m)}{unit})."
    onnx = final.get("onnx")
    if onnx:
        whole = onnx.get("end_to_end_max_relative_diff")
        text += (f"\nExported to `{Path(onnx['path']).name}` in the run folder, equal to Caffe in ONNX Runtime "
                 f"layer by layer within {onnx['max_relative_diff']:.2g} (relative)"
                 + (f", its outputs within {whole:.2g}." if whole is not None else "."))  # fmt: skip
    scratch = report.get("scratch") or {}
    if scratch:
        diff = report["inherited_minus_scratch_value"]
        gain = diff < 0 if report.get("lower_is_better") else diff > 0
        verdict = "beat" if gain else "did not beat"
        text += (f"\nInheriting the surviving weights {verdict} training the same widths from scratch: "
                 f"{shown(final['value'], m)} vs {shown(scratch['value'], m)} ({signed(diff, m)}{unit}).")  # fmt: skip
    return text


def notes(report: dict[str, Any]) -> str:
    """What the numbers are measured on, and how the decisions were made."""
    m = "top-1" if report["metric"] == ACCURACY else report["metric"]
    if report["decisions_on"] == "validation":
        text = ("Each iteration keeps the better of its cut and retrained weights on the validation split, and "
                "the decisions read the validation split too; the table's values are on the test set, which no "
                "decision sees. ")  # fmt: skip
    else:
        text = "No validation split was given: decisions were made on the test set it reports. "
    text += (f"An iteration is accepted when its {m}, paired image by image with the baseline's, is within the "
             f"tolerance ({report['tolerance']}) as a point estimate; the loop stops when one is beyond it by more "
             "than the paired standard error. MACs and speed are ratios to the original (forward times in Caffe, "
             "OpenCV's DNN and ONNX Runtime, the nets interleaved); mean APoZ is measured before each "
             "iteration's cut.")  # fmt: skip
    machine = report["baseline"].get("machine") or {}
    if machine.get("cpu"):
        text += (f" Computed on {machine['cpu']} ({machine['cores']} cores) with OpenBLAS {machine['blas_core']} "
                 f"kernels, {machine['blas_threads']} thread per child process.")  # fmt: skip
    if any("?" in cell for it in report["iterations"] for cell in cost_cells(it.get("cost"))):
        text += (f" A speed marked ? is not credible: its rounds disagreed by more than {UNSTEADY:.0%} (the machine "
                 f"was busy) or it exceeds {IMPLAUSIBLE:g}x the MACs ratio; time it again with "
                 "`python -m pytrim speed`.")  # fmt: skip
    return text


def curves(report: dict[str, Any], path: Path) -> Path | None:
    """Test top-1 against retraining iterations, one line per trimming iteration."""
    lines = [(it["iteration"], it["curve"]) for it in report["iterations"] if it.get("curve")]
    if not lines or report["baseline"]["top1"] is None:
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


def validation_curves(report: dict[str, Any], path: Path) -> Path | None:
    """The paired difference to the baseline on validation of every scored retraining snapshot,
    one line per try, with the tolerance (what decided which snapshot each try kept)."""
    lines = [(it["label"], (it.get("retraining") or {}).get("validation")) for it in report["iterations"]]
    lines = [(label, points) for label, points in lines if points]
    if not lines:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for label, points in lines:  # a loss is in the tolerance's units, > 0 worse: drawn as a difference
        ax.plot([p["iteration"] for p in points], [-p["loss"] for p in points], marker=".", label=label)
    ax.axhline(-report["tolerance"], color="grey", linestyle="--", label="tolerance")
    ax.axhline(0, color="black", linewidth=0.5)
    unit = "points" if report["metric"] == ACCURACY else report["metric"]
    ax.set(xlabel="retraining iteration", ylabel=f"paired difference on validation ({unit})",
           title="Validation while retraining (best snapshot kept)")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, path)


def histograms(out_dir: Path, report: dict[str, Any], path: Path) -> Path | None:
    """For each trimmed layer, its APoZ distribution at every iteration and in the final net."""
    firsts = [it for it in report["iterations"] if it.get("try", "a") == "a"]  # a later try has its first's
    sources = [(f"Trim-{it['iteration']} (before its cut)", out_dir / f"iter-{it['iteration']:02d}/stats.h5")
               for it in firsts] + [("final net", out_dir / "final/stats.h5")]  # fmt: skip
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


def write(state: dict[str, Any], schedule: Any, title: str, top5: bool = False) -> dict:
    """Write report.json, report.md and the figures into the schedule's folder; return the report."""
    out_dir = Path(schedule.out)
    report = build(state, schedule.val_data is not None, schedule.metric, schedule.tolerance)
    report["lower_is_better"] = schedule.lower_is_better
    report["provenance"] = provenance()
    write_json(out_dir / "report.json", report)
    write_atomic(out_dir / "report.md", markdown(report, title, top5))
    curves(report, out_dir / "accuracy_vs_retraining.png")
    validation_curves(report, out_dir / "validation_vs_retraining.png")
    histograms(out_dir, report, out_dir / "apoz_histograms.png")
    return report
