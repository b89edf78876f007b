"""A loop that backs off instead of stopping, and retraining sized to the drop, on the tiny
problem of test_loop.py: a try that is not accepted is followed by smaller steps from the same
parent (each a record of its own, resumed into after a kill); retraining keeps its best snapshot
on validation, stops early by patience, and goes on while it still improves beyond the tolerance."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from conftest import ROOT, toy_images, write_net
from test_loop import problem, report, trained_baseline, trim  # noqa: F401 - the fixtures

from pytrim.caffeio.lmdb import write_datums
from pytrim.loop.plan import candidates

TOP = ("retries", "auto_grow", "tolerance")


def schedule(d: Path, name: str, **changes: str) -> str:
    """The tiny schedule with keys changed: top-level ones (TOP) and [trim] ones."""
    lines = [line for line in (d / "schedule.toml").read_text().splitlines() if line.split(" = ")[0] not in changes]
    at = lines.index("[trim]")
    top = [f"{key} = {value}" for key, value in changes.items() if key in TOP]
    plan = [f"{key} = {value}" for key, value in changes.items() if key not in TOP]
    write_net(d / name, "\n".join([*lines[:at], *top, "[trim]", *plan, *lines[at + 1 :]]) + "\n")
    return name


def test_a_try_that_is_not_accepted_is_followed_by_smaller_steps(problem: Path) -> None:  # noqa: F811
    """Nothing is ever accepted (tolerance -100000): Trim-1 removes 75% of conv2 and ip1, Trim-1b
    half as many, Trim-1c half of that; then the stop rule ends the loop with the baseline."""
    name = schedule(problem, "b.toml", ratio="0.75", retries="2", tolerance="-100000.0")
    result = trim(problem, "--iterations", "2", schedule=name)
    assert result.returncode == 0, result.stderr[-3000:]
    rep = report(problem)
    assert [e["label"] for e in rep["iterations"]] == ["Trim-1", "Trim-1b", "Trim-1c"]
    assert [e["widths"] for e in rep["iterations"]] == ["6-2-3-10", "6-5-8-10", "6-7-10-10"]  # 6/9 removed, 3/4, 1/2
    assert [e["why_try"] for e in rep["iterations"]] == ["the plan", "each group's removal halved",
                                                         "each group's removal halved"]  # fmt: skip
    assert all(not e["accepted"] and e["verify_max_relative_diff"] <= 1e-5 for e in rep["iterations"])
    assert rep["final"]["iteration"] == 0 and "trying b: a smaller step from the same parent" in result.stdout
    assert not (problem / "run/iter-01b/stats.h5").exists()  # a later try reads its first try's statistics
    assert "| Trim-1b (each group's removal halved) (stopped) |" in (problem / "run/report.md").read_text()


def test_a_killed_run_resumes_into_the_same_try(problem: Path) -> None:  # noqa: F811
    name = schedule(problem, "b.toml", ratio="0.75", retries="1", tolerance="-100000.0")
    command = [sys.executable, "-m", "pytrim", "trim", "--quiet", "--iterations", "1", "--schedule",
               str(problem / name)]  # fmt: skip
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    state = problem / "run/state.json"
    while first.poll() is None:
        found = json.loads(state.read_text()) if state.is_file() else {}
        if any(r.get("try") == "b" and "cut" in r.get("steps", {}) for r in found.get("iterations", [])):
            first.kill()
            break
        time.sleep(0.05)
    first.wait()
    stamp = (problem / "run/iter-01/retrained.caffemodel").stat().st_mtime_ns
    again = trim(problem, "--iterations", "1", schedule=name)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "computing it again" not in again.stdout
    assert (problem / "run/iter-01/retrained.caffemodel").stat().st_mtime_ns == stamp  # try a kept whole
    assert [e["label"] for e in report(problem)["iterations"]] == ["Trim-1", "Trim-1b"]


def scrambled(folder: Path) -> None:
    """Training images with random labels: retraining on them makes validation worse and worse."""
    images, _ = toy_images(120, 1)
    labels = np.random.default_rng(5).integers(0, 10, len(images)).astype(np.uint8)
    write_datums(images, labels, folder / "train_db", progress=False)


def test_retraining_keeps_its_best_snapshot_on_validation(problem: Path) -> None:  # noqa: F811
    scrambled(problem)
    name = schedule(problem, "s.toml", finetune_iters="40", eval_every="10", patience="10")
    assert trim(problem, "--iterations", "1", schedule=name).returncode == 0
    retraining = report(problem)["iterations"][0]["retraining"]
    points = retraining["validation"]
    assert [p["iteration"] for p in points] == [10, 20, 30, 40]
    best = min(points, key=lambda p: p["loss"])
    assert points[-1]["loss"] > best["loss"]  # the last snapshot is worse than an earlier one
    assert retraining["best_iteration"] == best["iteration"] < 40
    kept = (problem / "run/iter-01/retrained.caffemodel").read_bytes()
    assert kept == Path(best["snapshot"]).read_bytes()
    assert (problem / "run/validation_vs_retraining.png").is_file()


def test_retraining_stops_early_by_patience(problem: Path) -> None:  # noqa: F811
    scrambled(problem)
    name = schedule(problem, "p.toml", finetune_iters="40", eval_every="10", patience="1")
    assert trim(problem, "--iterations", "1", schedule=name).returncode == 0
    retraining = report(problem)["iterations"][0]["retraining"]
    assert retraining["ended"] == "no improvement on validation in 1 evaluations"
    assert retraining["iterations"] < 40 and len(retraining["validation"]) == retraining["iterations"] // 10
    # (the tiny net may have written later snapshots before it was stopped: they are never scored)


def test_retraining_goes_on_while_it_is_beyond_the_tolerance(problem: Path) -> None:  # noqa: F811
    name = schedule(problem, "e.toml", finetune_iters="20", eval_every="10", patience="10",
                    max_finetune_iters="40", tolerance="-100000.0", retries="0")  # fmt: skip
    result = trim(problem, "--iterations", "1", schedule=name)
    assert result.returncode == 0, result.stderr[-3000:]
    retraining = report(problem)["iterations"][0]["retraining"]
    assert retraining["iterations"] == 40 and retraining["ended"] == "extended"
    assert [p["iteration"] for p in retraining["validation"]] == [10, 20, 30, 40]
    assert (problem / "run/iter-01/retrained.train/train-from-20.log").is_file()
    assert "retraining on to 40" in result.stdout


def test_the_plan_grows_by_at_most_auto_grow_groups() -> None:
    touching = {"a": {"b", "c", "d"}, "b": {"a"}, "c": {"a"}, "d": {"a"}}
    apoz = {"a": 0.9, "b": 0.3, "c": 0.7, "d": 0.5}
    first = {"plan": {"trimmed": ["a"], "dropped": {}}}
    assert list(candidates(2, [first], apoz, touching, start=1, grow=1)) == ["a", "c"]  # the highest APoZ joins
    assert list(candidates(2, [first], apoz, touching, start=1, grow=2)) == ["a", "c", "d"]
    assert list(candidates(2, [first], apoz, touching, start=1)) == ["a", "c", "d", "b"]


def test_eval_every_needs_a_validation_split(problem: Path) -> None:  # noqa: F811
    text = (problem / "schedule.toml").read_text().replace('val_data = "', '# val_data = "')
    write_net(problem / "v.toml", text.replace("[trim]\n", "[trim]\neval_every = 10\n"))
    result = trim(problem, schedule="v.toml")
    assert result.returncode == 1 and "eval_every scores retraining snapshots on the validation split" in result.stderr


def test_retime_times_every_try_again_and_reuses_the_rest(problem: Path) -> None:  # noqa: F811
    assert trim(problem, "--iterations", "1").returncode == 0
    before = json.loads((problem / "run/state.json").read_text())["iterations"][0]["steps"]
    again = trim(problem, "--iterations", "1", "--retime")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "timing" in again.stdout and "again (--retime)" in again.stdout
    assert "computing it again" not in again.stdout
    after = json.loads((problem / "run/state.json").read_text())["iterations"][0]["steps"]
    assert after["retrain"] == before["retrain"] and after["speed"] != before["speed"]
