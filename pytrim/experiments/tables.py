"""The tables the documentation shows, drawn from the results of record (pytrim.experiments.record):
one function per kind of run, each taking the run's own JSON and returning markdown."""

from __future__ import annotations

import statistics
from typing import Any

from pytrim.experiments.peers_report import table as peers_table
from pytrim.loop.report import plan_lines, result_line, shown, signed
from pytrim.stats.cost import speedups
from pytrim.stats.evaluate import ACCURACY

TIMES = "\N{MULTIPLICATION SIGN}"
DEPLOYED = (("OpenCV", "opencv"), ("ONNX Runtime", "onnxruntime"))  # runtimes timed on one thread


def _x(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}{TIMES}"


def _rows(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def provenance_line(entry: dict[str, Any]) -> str:
    """Where a recorded table comes from: the run's file, when, at which commit, on what (a run
    that did not stamp its commit is dated by its file and named by the commit it was recorded at)."""
    machine = entry.get("machine") or {}
    on = f"{machine.get('cpu', 'an unknown CPU')} ({machine.get('cores', '?')} cores)"
    if entry.get("commit"):
        dirty = " with uncommitted changes" if entry.get("dirty") else ""
        when = f"written {entry['measured']} at commit {entry['commit'][:10]}{dirty}"
    else:
        recorded = entry.get("recorded") or {}
        when = f"written {entry['measured']}, recorded at commit {(recorded.get('commit') or 'unknown')[:10]}"
    return f"_Recorded from `{entry['source']}` (`{entry['command']}`), {when}, on {on}._"


def speed_cells(cost: dict[str, Any] | None, runtime: str = "caffe", threads: str | None = None) -> tuple[str, str]:
    """MACs ratio and one runtime's 'batch 1 / larger batch' speedups ('?': not credible)."""
    cost = cost or {}
    speeds = ["n/a" if v is None else _x(v) + ("?" if why else "") for _, v, why in speedups(cost, runtime, threads)]
    return _x(cost.get("macs_ratio")), " / ".join(speeds)


def _value(entry: dict[str, Any], metric: str) -> str:
    if metric == ACCURACY and entry.get("top1") is not None:
        stderr = entry.get("top1_stderr")
        return f"{entry['top1']:.2%}" + (f" ± {100 * stderr:.2f}" if stderr is not None else "")
    return shown(entry.get("value"), metric)


def _difference(it: dict[str, Any], metric: str) -> str:
    return signed(it["difference"], metric, it["difference_stderr"])


def trim_run(report: dict[str, Any]) -> str:
    """A trimming run: the baseline and every try (widths, size, MACs, speed in each runtime, the
    test metric, the paired difference that decided, acceptance), the plan and the result."""
    metric, base = report.get("metric", ACCURACY), report["baseline"]
    batches = sorted({k.removeprefix("speedup_batch") for it in report["iterations"] for k in it.get("cost") or {}
                      if k.startswith("speedup_batch")}, key=int)  # fmt: skip
    pair = " / ".join(f"b{b}" for b in batches)
    on = report.get("decisions_on", "validation")
    head = ["", "widths", "parameters", "compression", "MACs", f"Caffe {pair}",
            *(f"{title} {pair} (1 thread)" for title, _ in DEPLOYED),
            f"test {'top-1' if metric == ACCURACY else metric}", f"paired diff. ({on})", "accepted"]  # fmt: skip
    rows = [["baseline", base["widths"], f"{base['params']:,}", _x(1.0), _x(1.0), "", "", "", _value(base, metric),
             "", ""]]  # fmt: skip
    for it in report["iterations"]:
        macs, speed = speed_cells(it.get("cost"))
        deployed = [speed_cells(it.get("cost"), runtime, "threads1")[1] for _, runtime in DEPLOYED]
        accepted = ("yes" if it["accepted"] else "no") + (" (stopped)" if it.get("stopped") else "")
        label = it.get("label") or f"Trim-{it['iteration']}"
        label += f" ({it['why_try']})" if it.get("try", "a") != "a" else ""
        rows.append([label, it["widths"], f"{it['params']:,}", _x(it["compression"]), macs, speed, *deployed,
                     _value(it, metric), _difference(it, metric), accepted])  # fmt: skip
    lines = [*_rows(head, rows), "", *plan_lines(report), result_line(report)]
    return "\n".join(lines).replace("\n\n\n", "\n\n")


def headline(trims: dict[str, dict[str, Any]], coverage_entry: dict | None, speed_entry: dict | None) -> str:
    """README's table: each benchmark's result, and one line each for surgery coverage and speed."""
    head = [
        "net",
        "baseline test top-1",
        "result",
        "parameters",
        "MACs",
        "speed, batch 1: Caffe / OpenCV / ONNX Runtime (1 thread)",
        "test top-1",
        "paired test difference",
    ]
    rows = []
    for name, entry in trims.items():
        report = entry["data"]
        final, base = report["final"], report["baseline"]
        chosen = final["iteration"] or None
        macs, _ = speed_cells(final.get("cost"))
        speed = " / ".join(speed_cells(final.get("cost"), runtime, "threads1")[1].split(" / ")[0]
                           for runtime in ("caffe", "opencv", "onnxruntime"))  # fmt: skip
        difference = "" if final.get("test_difference") is None else (
            f"{100 * final['test_difference']:+.2f} ± {100 * final['test_difference_stderr']:.2f}")  # fmt: skip
        result = (
            f"{final.get('label') or 'Trim-' + str(final['iteration'])} of {len(report['iterations'])}"
            if chosen
            else "baseline"
        )
        rows.append([f"`make {name}`", _value(base, report["metric"]), result, _x(final["compression"]) + " fewer",
                     macs + " fewer", speed, _value(final | {"top1_stderr": None}, report["metric"]),
                     difference])  # fmt: skip
    lines = _rows(head, rows) if rows else ["_No trimming run recorded yet (`make lenet-trim`, then `make record`)._"]
    if coverage_entry:
        nets = coverage_entry["data"]
        worst = max(n["verify_exact_max_relative_diff"] for n in nets.values())
        layers = sum(n["conv_ip_layers"] for n in nets.values())
        cut = sum(n["trimmable"] for n in nets.values())
        lines += [
            "",
            f"Surgery ({len(nets)} model-zoo nets, `make coverage`): {cut} of {layers} Convolution/"
            f"InnerProduct layers trimmable; every exact cut verified within {worst:.1e} of the silenced "
            "original.",
        ]
    if speed_entry:
        plain = speed_entry["data"]["summary"]["round_to_1"]
        deployed = "; ".join(
            f"{title} {_plain(plain.get(f'{r}_median_efficiency_batch1'))} / "
            f"{_plain(plain.get(f'{r}_median_efficiency_batch8'))}"
            for title, r in DEPLOYED
        )
        lines += ["", "Speed (`make bench-speed`): the forward time falls by a median fraction of the MACs' fall, "
                  f"at batch 1 / 8, of {deployed} (one thread); Caffe's CPU kernels "
                  f"{plain['median_efficiency_batch1']:.2f} / {plain['median_efficiency_batch8']:.2f}."]  # fmt: skip
    return "\n".join(lines)


def _short(reasons: dict[str, str], shown_names: int = 3) -> str:
    names = list(reasons)
    text = ", ".join(names[:shown_names])
    return text + (f" and {len(names) - shown_names} more" if len(names) > shown_names else "") if names else "none"


def coverage(nets: dict[str, Any]) -> str:
    """`make coverage`: per net the Convolution/InnerProduct layers, how many are trimmable,
    which are refused, the exact cuts' verification and what the cut cost."""
    head = ["net", "Conv/IP layers", "trimmable", "refused", "exact cuts verify", "cut", "cut peak memory / caffemodel"]
    rows = [[name, str(n["conv_ip_layers"]), str(n["trimmable"]), _short(n["refused"]),
             f"{n['verify_exact_max_relative_diff']:.1e}", f"{n['cut_seconds']:.1f} s",
             f"{_x(n['cut_rss_over_caffemodel'])} ({n['caffemodel_mb']:.0f} MB model)"]
            for name, n in nets.items()]  # fmt: skip
    return "\n".join(_rows(head, rows))


def _pair(row: dict[str, Any], key: str, doubt: str | None = None) -> str:
    """'batch 1 / batch 8' of one key ('?': not credible; 'n/a': not run)."""
    cells = []
    for batch in (1, 8):
        value = row.get(f"{key}_batch{batch}")
        mark = "?" if doubt and row.get(f"{doubt}_batch{batch}") else ""
        cells.append("n/a" if value is None else f"{value:.2f}{mark}")
    return " / ".join(cells)


def speed(result: dict[str, Any]) -> str:
    """`make bench-speed`: per case the MACs ratio, Caffe's time ratio and efficiency (and where
    its time goes), OpenCV's and ONNX Runtime's efficiency on one thread; then the medians."""
    head = ["net", "cut", "round_to", "MACs", "Caffe time, b1 / b8", "Caffe efficiency, b1 / b8",
            *(f"{t} efficiency, b1 / b8 (1 thread)" for t, _ in DEPLOYED), "Caffe MAC layers' efficiency, b1 / b8",
            "Caffe other layers: share, speedup (b1)"]  # fmt: skip
    rows = [[c["net"], f"{c['fraction']:.2f}", str(c["round_to"]), _x(c["macs_ratio"]), _pair(c, "time_ratio"),
             _pair(c, "efficiency"), *(_pair(c, f"{r}_efficiency", f"{r}_doubt") for _, r in DEPLOYED),
             _pair(c, "mac_layers_efficiency"),
             f"{c['other_layers_share_batch1']:.0%}, {_x(c['other_layers_time_ratio_batch1'])}"]
            for c in result["cases"]]  # fmt: skip
    lines = [*_rows(head, rows), ""]
    for rounding, found in result["summary"].items():
        if not rounding.startswith("round_to_"):
            continue
        parts = [
            f"Caffe {_plain(found['median_efficiency_batch1'])} / {_plain(found['median_efficiency_batch8'])} "
            f"(lowest {_plain(found['min_efficiency_batch1'])} / {_plain(found['min_efficiency_batch8'])})"
        ]
        parts += [f"{title} {_plain(found.get(f'{r}_median_efficiency_batch1'))} / "
                  f"{_plain(found.get(f'{r}_median_efficiency_batch8'))} (lowest "
                  f"{_plain(found.get(f'{r}_min_efficiency_batch1'))} / "
                  f"{_plain(found.get(f'{r}_min_efficiency_batch8'))})" for title, r in DEPLOYED]  # fmt: skip
        lines.append(f"- round_to {rounding.removeprefix('round_to_')}, median efficiency at batch 1 / 8: "
                     + "; ".join(parts) + f"; Caffe's MAC layers alone "
                     f"{_plain(found['median_mac_layers_efficiency_batch1'])} / "
                     f"{_plain(found['median_mac_layers_efficiency_batch8'])}.")  # fmt: skip
    gain = result["summary"]["rounding_8"]
    lines.append(f"- Rounding to 8 in Caffe, where it changed the widths: median efficiency gain {_signed(gain, 1)} "
                 f"(batch 1) and {_signed(gain, 8)} (batch 8), against a noise of {_plain(gain['noise_batch1'])} / "
                 f"{_plain(gain['noise_batch8'])} (the same widths timed twice).")  # fmt: skip
    lines.append(f"- Caffe timed with {result['threads']} BLAS threads (OpenBLAS {result['blas_core']} kernels), "
                 f"OpenCV and ONNX Runtime on one thread; {result['repeats']} rounds; `?`: not credible.")  # fmt: skip
    return "\n".join(lines)


def export(result: dict[str, Any]) -> str:
    """`make bench-export`: per net, original and trimmed, whether it exported, how close to
    Caffe in ONNX Runtime and in OpenCV, and each runtime's speed against Caffe's on one thread."""
    head = ["net", "model", "exported", "ONNX Runtime vs Caffe, layer by layer", "its outputs end to end",
            "OpenCV vs Caffe", "OpenCV: Caffe time / its", "ONNX Runtime: Caffe time / its"]  # fmt: skip
    rows = []
    for name, kinds in result["nets"].items():
        for kind, e in kinds.items():
            if not e["exported"]:
                rows.append([name, kind, "no: " + e["error"][:120], "", "", "", "", ""])
                continue
            opencv = f"{e['opencv_max_relative_diff']:.1e}" if "opencv_max_relative_diff" in e else "cannot load"
            opencv += " (differs: see caveats)" if e.get("opencv_caveats") else ""
            times = [_x(e["times"][r]["caffe_over_this"]) if "seconds" in e["times"].get(r, {}) else "n/a"
                     for r in ("opencv", "onnxruntime")]  # fmt: skip
            whole = e.get("end_to_end_max_relative_diff")
            rows.append([name, kind, "yes", f"{e['max_relative_diff']:.1e}", _sci(whole) if whole is not None else "",
                         opencv, *times])  # fmt: skip
    found = result["summary"]
    lines = [*_rows(head, rows), "", f"- {found['exported']} of {found['models']} models exported and verified, "
             f"the largest relative difference to Caffe {_sci(found['max_relative_diff'])}; median speed against "
             f"Caffe on one thread: OpenCV {_x(found['opencv_median_caffe_over_this'])}, ONNX Runtime "
             f"{_x(found['onnxruntime_median_caffe_over_this'])}."]  # fmt: skip
    return "\n".join(lines)


def _sci(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1e}"


def _signed(gain: dict[str, Any], batch: int) -> str:
    value = gain.get(f"median_gain_batch{batch}")
    return "n/a" if value is None else f"{value:+.2f}"


def _plain(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def apoz_overhead(results: dict[str, Any]) -> str:
    """`make bench`: the whole statistics path against a bare forward pass, per net."""
    head = ["net", "images", "pairs", "collect / forward (median)", "interquartile spread", "ratio of the fastest",
            "forward", "collect"]  # fmt: skip
    rows = [[name, str(r["images"]), str(r["repeats"]), f"{r['ratio']:.3f}", f"{r['spread']:.3f}",
             f"{r['ratio_of_fastest']:.3f}", f"{r['forward_seconds']:.2f} s", f"{r['collect_seconds']:.2f} s"]
            for name, r in results.items() if isinstance(r, dict) and "ratio" in r]  # fmt: skip
    return "\n".join(_rows(head, rows))


def scale(result: dict[str, Any]) -> str:
    """`make bench-scale`: the same shard pass in one process and on 1 and 2 Ray workers."""
    start = result["ray_start_and_first_run_seconds"]
    lines = [f"- {result['pass']}, {result['images']:,} images, median of {result['repeats']} passes: "
             f"{result['in_process_seconds']:.3f} s in one process, {result['ray_1_worker_seconds']:.3f} s on one Ray "
             f"worker, {result['ray_2_workers_seconds']:.3f} s on two.",
             f"- speedup on two workers {_x(result['speedup_2_workers'])}; one worker against one process "
             f"{result['ray_overhead_1_worker']:+.1%}; identical counts: "
             f"{'yes' if result['identical_counts'] else 'NO'}.",
             f"- starting Ray and the first pass (apart): {start['1']:.1f} s (1 worker), "
             f"{start['2']:.1f} s (2)."]  # fmt: skip
    if "sweep_1_worker_seconds" in result:
        lines.append(f"- a criteria sweep (`{' '.join(result['sweep_args'])}`): "
                     f"{result['sweep_1_worker_seconds']:.1f} s on one worker, "
                     f"{result['sweep_2_workers_seconds']:.1f} s on two "
                     f"({_x(result['sweep_speedup_2_workers'])}).")  # fmt: skip
    return "\n".join(lines)


UNIT_CRITERIA = ("apoz", "mean_activation", "l1", "taylor", "random")


def criteria(report: dict[str, Any]) -> str:
    """`make lenet-compare`: test top-1 (mean ± standard deviation over the seeds) per criterion
    and point, unit criteria side by side at the same widths, connection criteria listed."""
    rows, summary = [], report["summary"]
    for net in dict.fromkeys(r["net"] for r in summary):
        for point in sorted({r["point"] for r in summary if r["net"] == net and r["criterion"] in UNIT_CRITERIA}):
            found = {r["criterion"]: r for r in summary if (r["net"], r["point"]) == (net, point)}
            cells = [f"{100 * found[c]['top1']:.2f} ± {100 * found[c]['top1_std']:.2f}" if c in found else ""
                     for c in UNIT_CRITERIA]  # fmt: skip
            compression = statistics.mean(r["compression"] for r in found.values() if r["criterion"] in UNIT_CRITERIA)
            rows.append([net, f"{point:g} ({_x(compression)})", *cells])
    lines = [*_rows(["net", "fraction cut (compression)", *UNIT_CRITERIA], rows), ""]
    for r in summary:
        if r["criterion"] not in UNIT_CRITERIA:
            lines.append(f"- {r['net']}, {r['criterion']} at {r['point']:g}: {_x(r['compression'])} at "
                         f"{100 * r['top1']:.2f} ± {100 * r['top1_std']:.2f}.")  # fmt: skip
    settings = report["settings"]
    bases = "; ".join(f"{net} {b['params']:,} parameters, {b['top1']:.2%}" for net, b in report["baselines"].items())
    lines.append(f"- Baselines: {bases}. Budget {settings['budget']} iterations per point, {len(settings['seeds'])} "
                 "seeds; test top-1 after retraining.")  # fmt: skip
    return "\n".join(lines)


def relief(report: dict[str, Any]) -> str:
    """`make lenet-relief`: per round the non-zero parameters, compression and test top-1 of each net."""
    nets = list(report)
    head = ["round"] + [f"{net} {what}" for net in nets for what in ("non-zero", "compression", "top-1")]
    rounds = max(len(report[net]["rounds"]) for net in nets)
    rows = [["baseline"] + [cell for net in nets for cell in (f"{report[net]['baseline']['params']:,}", _x(1.0),
                                                             f"{report[net]['baseline']['top1']:.2%}")]]  # fmt: skip
    for number in range(rounds):
        row = [str(number + 1)]
        for net in nets:
            found = report[net]["rounds"][number] if number < len(report[net]["rounds"]) else None
            row += ([f"{found['nonzero']:,}", _x(found["compression"]), f"{found['top1']:.2%}"] if found
                    else ["", "", ""])  # fmt: skip
        rows.append(row)
    return "\n".join(_rows(head, rows))


def fresh_check(result: dict[str, Any]) -> str:
    """`make fresh-check`: the quick start's two commands on a minimal Debian 12."""

    def minutes(seconds: float | None) -> str:
        return "not run" if not seconds else f"{int(seconds // 60)} min {int(seconds % 60)} s"

    verdict = "both passed" if result["ok"] else f"failed at {result.get('failed_step')}"
    return (f"- a minimal Debian 12 with Debian's own python3, git and make ({result.get('source')} of "
            f"{(result.get('commit') or '')[:10]}): {verdict}; `make caffe` {minutes(result.get('caffe_seconds'))}, "
            f"`make lenet-trim` {minutes(result.get('lenet_trim_seconds'))}.")  # fmt: skip


def peers(result: dict[str, Any]) -> str:
    """`make bench-peers`: pytrim and Torch-Pruning per net, importance and MACs target, the
    verdicts at the matched MACs, the twins' checks and the budgets (pytrim.experiments.peers_report)."""
    return peers_table(result).rstrip("\n")
