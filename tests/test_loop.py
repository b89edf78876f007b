"""The whole trimming loop on a tiny net: report, resume, results that cannot go stale,
a lock against a second run, the stop rules and the schedule's own checks."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, files_under, net_text, small_body, toy_db, write_net
from google.protobuf import text_format

from pytrim.caffeio.caffemodel import Caffemodel
from pytrim.caffeio.env import blas_coretype
from pytrim.core.files import sha256_file
from pytrim.loop.schedule import load_schedule
from pytrim.stats.statsfile import load_stats

SOLVER = """net: "{net}"
test_iter: 2
test_interval: {test_interval}
base_lr: {lr}
momentum: 0.9
weight_decay: 0.0005
lr_policy: "fixed"
display: 10
max_iter: 40
snapshot: 0
snapshot_prefix: "unused"
solver_mode: CPU
random_seed: 3
"""

SCHEDULE = """name = "tiny"
net = "{d}/train_val.prototxt"
deploy = "{d}/deploy.prototxt"
weights = "{d}/baseline.caffemodel"
train_missing_weights = true
baseline_solver = "{d}/solver.prototxt"
finetune_solver = "{d}/finetune.prototxt"
out = "{d}/run"
val_data = "{d}/val_db"
stats_data = "{d}/val_db"
curve_every = 10
iterations = 2
tolerance = 100.0
scratch = false
scratch_iters = 30

[trim]
layers = ["conv2", "ip1"]
rule = "ratio"
ratio = 0.25
finetune_iters = 20
min_keep = {{ conv2 = 2, ip1 = 2 }}
"""


def write_solver(path: Path, net: Path, lr: float, test_interval: int = 100000) -> Path:
    return write_net(path, SOLVER.format(net=net, lr=lr, test_interval=test_interval))


@pytest.fixture(scope="session")
def trained_baseline(tmp_path_factory) -> Path:
    """The tiny problem with its baseline trained once for the whole session."""
    d = tmp_path_factory.mktemp("baseline")
    make_problem(d)
    assert trim(d, "--iterations", "0").returncode == 0
    return d / "baseline.caffemodel"


def make_problem(d: Path) -> Path:
    train_db, test_db = toy_db(d / "train_db", 120, seed=1), toy_db(d / "test_db", 40, seed=2)
    toy_db(d / "val_db", 40, seed=3)
    train_val = write_net(d / "train_val.prototxt", net_text(small_body, [20, 1, 28, 28], (train_db, test_db, 20)))
    write_net(d / "deploy.prototxt", net_text(small_body, [4, 1, 28, 28]))
    write_solver(d / "solver.prototxt", train_val, 0.01)
    write_solver(d / "finetune.prototxt", train_val, 0.005)
    write_net(d / "schedule.toml", SCHEDULE.format(d=d))
    return d


@pytest.fixture
def problem(tmp_path: Path, trained_baseline: Path) -> Path:
    make_problem(tmp_path)
    shutil.copy(trained_baseline, tmp_path / "baseline.caffemodel")
    return tmp_path


def trim(d: Path, *args: str, schedule: str = "schedule.toml") -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pytrim", "trim", "--quiet", "--schedule", str(d / schedule), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)


def report(d: Path) -> dict:
    return json.loads((d / "run/report.json").read_text())


def mtime(path: Path) -> int:
    return path.stat().st_mtime_ns


def test_tiny_loop_writes_report_and_resumes(problem: Path) -> None:
    before = {p.name for p in problem.glob("*.prototxt")}
    result = trim(problem)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {p.name for p in problem.glob("*.prototxt")} == before  # derived nets go inside the run folder
    rep = report(problem)
    assert rep["baseline"]["widths"] == "6-8-12-10" and rep["baseline"]["images"] == 40
    machine = rep["baseline"]["machine"]  # what the children computed with: one thread, the pinned kernels
    assert machine["blas_threads"] == 1 and machine["cpu"] and machine["cores"] >= 1
    assert machine["blas_core"] == (blas_coretype() or machine["blas_core"])
    assert [e["widths"] for e in rep["iterations"]] == ["6-6-9-10", "6-5-7-10"]  # 25% of conv2 and ip1 each time
    first, second = rep["iterations"]
    assert rep["baseline"]["params"] > first["params"] > second["params"]
    assert second["compression"] == pytest.approx(rep["baseline"]["params"] / second["params"], rel=1e-3)
    for entry in rep["iterations"]:
        assert set(entry["mean_apoz"]) == {"conv1", "conv2", "ip1"}
        assert entry["verify_max_relative_diff"] <= 1e-5
    state = json.loads((problem / "run/state.json").read_text())
    assert set(state["iterations"][0]["steps"]["verify"]["result"]["nets"]) == {"train_val", "deploy"}
    markdown = (problem / "run/report.md").read_text()
    final = rep["final"]  # paired with the baseline on the test set too (reported, never deciding)
    assert math.isfinite(final["test_difference"]) and final["test_difference_stderr"] >= 0
    assert final["test_difference"] == pytest.approx(final["top1"] - rep["baseline"]["top1"])
    assert "± " in markdown.split("Result:")[1].splitlines()[0] and "paired)" in markdown
    assert "| Trim-2 | 6-5-7-10 |" in markdown and "kernels, 1 thread per child process" in markdown
    for name in ("stats.h5", "selection.json", "train_val.prototxt", "deploy.prototxt", "trimmed.caffemodel",
                 "retrained.caffemodel", "plots/apoz_conv2.png"):  # fmt: skip
        assert (problem / "run/iter-01" / name).is_file(), name
    # The same command again: nothing is redone.
    stamps = {p: mtime(p) for p in (problem / "run").rglob("*.caffemodel")}
    again = trim(problem)
    assert again.returncode == 0 and "resuming" in again.stdout and "computing it again" not in again.stdout
    assert {p: mtime(p) for p in stamps} == stamps
    # A third iteration: iterations 1 and 2 are kept.
    assert trim(problem, "--iterations", "3").returncode == 0
    assert [e["iteration"] for e in report(problem)["iterations"]] == [1, 2, 3]
    assert all(mtime(p) == t for p, t in stamps.items())


def test_other_settings_are_computed_again_from_where_they_differ(problem: Path) -> None:
    assert trim(problem, "--iterations", "1").returncode == 0
    stats, selection = problem / "run/iter-01/stats.h5", problem / "run/iter-01/selection.json"
    before = {p: mtime(p) for p in (stats, selection, problem / "run/iter-01/retrained.caffemodel")}
    chosen = json.loads(selection.read_text())["layers"]
    # Another criterion: statistics are reused, the choice and everything after it are redone.
    result = trim(problem, "--iterations", "1", "--criterion", "l1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "select (Trim-1): its inputs or settings changed" in result.stdout
    assert mtime(stats) == before[stats] and mtime(selection) != before[selection]
    assert json.loads(selection.read_text())["layers"] != chosen
    assert mtime(problem / "run/iter-01/retrained.caffemodel") != before[problem / "run/iter-01/retrained.caffemodel"]
    # Another fine-tuning budget: the cut is reused, retraining is redone.
    trimmed = mtime(problem / "run/iter-01/trimmed.caffemodel")
    result = trim(problem, "--iterations", "1", "--criterion", "l1", "--finetune-iters", "10")
    assert "retrain (Trim-1): its inputs or settings changed" in result.stdout
    assert mtime(problem / "run/iter-01/trimmed.caffemodel") == trimmed
    state = json.loads((problem / "run/state.json").read_text())
    assert state["iterations"][0]["steps"]["retrain"]["result"]["iterations"] == 10
    # Another k in the schedule file (rule apoz): the choice is redone.
    text = (problem / "schedule.toml").read_text().replace('rule = "ratio"', 'rule = "mean_std"\nk = 0.5')
    write_net(problem / "k.toml", text)
    result = trim(problem, "--iterations", "1", schedule="k.toml")
    assert result.returncode == 0 and "select (Trim-1): its inputs or settings changed" in result.stdout


def test_regenerated_weights_reach_the_report_and_the_next_iteration(problem: Path) -> None:
    assert trim(problem).returncode == 0
    stats2 = mtime(problem / "run/iter-02/stats.h5")
    # Someone replaces the weights iteration 1 kept with the other ones.
    kept = json.loads((problem / "run/state.json").read_text())["iterations"][0]["kept"]
    other = "trimmed" if kept == "retrained" else "retrained"
    shutil.copy(problem / f"run/iter-01/{other}.caffemodel", problem / f"run/iter-01/{kept}.caffemodel")
    result = trim(problem)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "collect (iteration 2): its inputs or settings changed" in result.stdout
    assert mtime(problem / "run/iter-02/stats.h5") != stats2
    assert f"evaluate {problem / f'run/iter-01/{kept}.caffemodel'}: its inputs or settings changed" in result.stdout
    rep = report(problem)
    assert rep["iterations"][0]["top1_retrained"] == rep["iterations"][0]["top1_trimmed"]


def test_fewer_iterations_report_only_those_and_scratch_follows_the_widths(problem: Path) -> None:
    assert trim(problem).returncode == 0
    result = trim(problem, "--iterations", "1", "--scratch-iters", "10")
    assert result.returncode == 0
    rep = report(problem)
    assert [e["iteration"] for e in rep["iterations"]] == [1] and "Trim-2" not in (
        problem / "run/report.md"
    ).read_text()
    # Scratch is off in the schedule: turn it on through a schedule copy, then extend the run.
    write_net(
        problem / "scratch.toml", (problem / "schedule.toml").read_text().replace("scratch = false", "scratch = true")
    )
    assert trim(problem, "--iterations", "1", schedule="scratch.toml").returncode == 0
    assert report(problem)["scratch"]["widths"] == "6-6-9-10"
    assert trim(problem, "--iterations", "2", schedule="scratch.toml").returncode == 0
    rep = report(problem)
    assert rep["scratch"]["widths"] == rep["final"]["widths"] == "6-5-7-10"


def test_a_second_run_on_the_same_folder_is_refused(problem: Path) -> None:
    first = subprocess.Popen(
        [sys.executable, "-m", "pytrim", "trim", "--quiet", "--schedule", str(problem / "schedule.toml")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    try:
        lock = problem / "run/.pytrim-lock"
        for _ in range(200):
            if lock.is_file() and lock.read_text().strip() == str(first.pid):
                break
            time.sleep(0.05)
        second = trim(problem)
        assert_one_line_error(second, "in use by another pytrim run", f"pid {first.pid}")
    finally:
        first.wait(timeout=300)
    assert first.returncode == 0
    assert trim(problem).returncode == 0  # the lock went with its owner


def test_a_killed_run_leaves_no_lock(problem: Path) -> None:
    first = subprocess.Popen(
        [sys.executable, "-m", "pytrim", "trim", "--quiet", "--schedule", str(problem / "schedule.toml")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    lock = problem / "run/.pytrim-lock"
    while not (lock.is_file() and lock.read_text().strip() == str(first.pid)):
        time.sleep(0.05)
    first.kill()
    first.wait()
    result = trim(problem)
    assert result.returncode == 0, result.stderr[-2000:]


def test_nan_retraining_is_retried_at_a_lower_rate_and_a_crash_keeps_the_finished_steps(problem: Path) -> None:
    # Diverges at 1e15, 1e14 and 1e13: the step fails, and what finished before it is kept.
    write_solver(problem / "finetune.prototxt", problem / "train_val.prototxt", 1e15)
    result = trim(problem, "--iterations", "1")
    assert_one_line_error(result, "diverged three times")
    state = json.loads((problem / "run/state.json").read_text())
    steps = state["iterations"][0]["steps"]
    assert {"collect", "select", "cut", "verify", "evaluate:trimmed"} <= set(steps) and "retrain" not in steps
    collected = steps["collect"]["seconds"]
    # A rate that diverges at full strength: a retry at a tenth (or a hundredth) of it trains.
    write_solver(problem / "finetune.prototxt", problem / "train_val.prototxt", 1000.0)
    result = trim(problem, "--iterations", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training diverged" in result.stdout
    state = json.loads((problem / "run/state.json").read_text())
    assert state["iterations"][0]["steps"]["collect"]["seconds"] == collected
    assert state["iterations"][0]["steps"]["retrain"]["result"]["base_lr"] in (
        pytest.approx(100.0),
        pytest.approx(10.0),
    )


def test_stop_rule_keeps_the_iteration_before(problem: Path) -> None:
    # Stop when top-1 after retraining is below baseline + 1000 points: always, at once (with no
    # smaller steps tried: retries = 0, today's loop; tests/test_backoff.py tries them).
    write_net(problem / "r.toml", (problem / "schedule.toml").read_text().replace("[trim]", "retries = 0\n[trim]"))
    result = trim(problem, "--tolerance", "-100000", schedule="r.toml")
    assert result.returncode == 0, result.stderr[-3000:]
    rep = report(problem)
    assert rep["iterations"][0]["stopped"] and len(rep["iterations"]) == 1
    assert rep["final"]["iteration"] == 0 and rep["final"]["widths"] == rep["baseline"]["widths"]
    assert "stop:" in result.stdout and "the result is the baseline" in result.stdout


def test_nothing_left_to_trim_ends_the_loop(problem: Path) -> None:
    text = (problem / "schedule.toml").read_text().replace('rule = "ratio"', 'rule = "mean_std"\nk = 100.0')
    write_net(problem / "k.toml", text)
    result = trim(problem, schedule="k.toml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "nothing left to trim" in result.stdout
    rep = report(problem)
    assert rep["iterations"] == [] and rep["final"]["iteration"] == 0


def test_iteration_overrides_change_that_iteration_only(problem: Path) -> None:
    text = (problem / "schedule.toml").read_text() + '\n[[iteration]]\nnumber = 2\nlayers = ["ip1"]\nratio = 0.5\n'
    write_net(problem / "o.toml", text)
    result = trim(problem, schedule="o.toml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [e["widths"] for e in report(problem)["iterations"]] == ["6-6-9-10", "6-6-5-10"]
    assert [e["layers"] for e in report(problem)["iterations"]] == [["conv2", "ip1"], ["ip1"]]


def test_finetune_lr_sets_the_retraining_rate_and_its_key(problem: Path, caffe) -> None:
    text = (problem / "schedule.toml").read_text()
    text = text.replace("finetune_iters = 20", "finetune_iters = 20\nfinetune_lr = 0.002")
    write_net(problem / "lr.toml", text)
    assert trim(problem, "--iterations", "1", schedule="lr.toml").returncode == 0
    solver = caffe.proto.caffe_pb2.SolverParameter()
    text_format.Merge((problem / "run/iter-01/retrained.train/solver.prototxt").read_text(), solver)
    assert solver.base_lr == pytest.approx(0.002)  # the fine-tuning solver says 0.005
    # The command-line option changes the rate, so the retraining is redone; the cut is kept.
    cut = mtime(problem / "run/iter-01/trimmed.caffemodel")
    again = trim(problem, "--iterations", "1", "--finetune-lr", "0.001", schedule="lr.toml")
    assert again.returncode == 0 and "retrain (Trim-1): its inputs or settings changed" in again.stdout
    text_format.Merge((problem / "run/iter-01/retrained.train/solver.prototxt").read_text(), solver)
    assert solver.base_lr == pytest.approx(0.001)
    assert mtime(problem / "run/iter-01/trimmed.caffemodel") == cut


def test_restart_removes_only_a_pytrim_run_folder(problem: Path) -> None:
    assert trim(problem, "--iterations", "1").returncode == 0
    old = mtime(problem / "run/iter-01/stats.h5")
    # A finished step's file replaced from outside: one line naming it, offering --restart.
    trimmed = problem / "run/iter-01/trimmed.caffemodel"
    shutil.copy(problem / "baseline.caffemodel", trimmed)
    damaged = trim(problem, "--iterations", "1")
    assert_one_line_error(damaged, f"{trimmed} changed after this run wrote it", "--restart")
    assert "run the same command again to resume" not in damaged.stderr
    result = trim(problem, "--iterations", "1", "--restart")
    assert result.returncode == 0 and "resuming" not in result.stdout
    assert mtime(problem / "run/iter-01/stats.h5") != old
    # A folder pytrim did not make is neither removed nor written into.
    mine = problem / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    assert_one_line_error(trim(problem, "--out", mine, "--restart"), "not a pytrim trim folder")
    assert_one_line_error(trim(problem, "--out", mine), "not a pytrim trim folder")
    assert files_under(mine) == ["thesis.tex"]
    # Output folders that hold the inputs, or a file.
    assert_one_line_error(trim(problem, "--out", problem), "contains the input")
    assert_one_line_error(trim(problem, "--out", problem / "schedule.toml"), "is the input")
    (problem / "notes.md").write_text("mine")
    assert_one_line_error(trim(problem, "--out", problem / "notes.md"), "is a file")


def test_schedule_errors_are_one_line_and_come_before_any_work(problem: Path) -> None:
    bad = write_net(problem / "bad.toml", 'net = "x"\n[trim]\nlayers = ["conv2"]\n')
    assert_one_line_error(trim(problem, schedule="bad.toml"), "missing keys")
    assert_one_line_error(trim(problem, schedule="nothing.toml"), "schedule file not found")
    cases = {
        "k = 1.0": ('k = "one"', "k must be a finite number"),
        "ratio = 0.25": ("ratio = 1.5", "ratio must be a number in [0, 1)"),
        "iterations = 2": ("iterations = 2\ncolour = 3", "unknown key 'colour'"),
        'rule = "ratio"': ('rule = "fancy"', "rule must be one of"),
        "finetune_iters = 20": ("finetune_iters = 20\nfinetune_lr = 0", "finetune_lr must be a number > 0"),
    }
    base = (problem / "schedule.toml").read_text().replace('rule = "ratio"', 'rule = "ratio"\nk = 1.0')
    for old, (new, message) in cases.items():
        write_net(bad, base.replace(old, new))
        assert_one_line_error(trim(problem, schedule="bad.toml"), message)
    # A typo in `weights` with training of missing weights off: an error, not a training run.
    write_net(
        bad, base.replace("baseline.caffemodel", "baseline.cafemodel").replace("train_missing_weights = true", "")
    )
    assert_one_line_error(trim(problem, schedule="bad.toml"), "baseline weights not found", "baseline.cafemodel")
    assert not (problem / "run").exists()


def test_weights_option_trims_a_users_own_caffemodel(problem: Path, caffe) -> None:
    mine = problem / "mine.caffemodel"
    caffe.set_random_seed(5)
    caffe.Net(str(problem / "train_val.prototxt"), caffe.TEST).save(str(mine))
    result = trim(problem, "--weights", mine, "--iterations", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((problem / "run/state.json").read_text())
    assert "train" not in state["baseline"].get("steps", {})

    stats = problem / "run/iter-01/stats.h5"
    import h5py

    with h5py.File(stats) as handle:
        assert handle.attrs["weights_sha256"] == sha256_file(mine)
    # Weights of another net: one error line naming the layers and shapes, nothing written.
    other = problem / "other.caffemodel"
    lenet = ROOT / "prototxt/lenet/deploy.prototxt"
    caffe.Net(str(lenet), caffe.TEST).save(str(other))
    result = trim(problem, "--weights", other, "--out", problem / "other-run")
    assert_one_line_error(result, "does not match", "conv1 blob 0: shape (6, 1, 3, 3)", "(20, 1, 5, 5)")
    assert [p for p in files_under(problem / "other-run") if not p.startswith(".pytrim")] == []
    # A missing --weights file is never trained.
    assert_one_line_error(trim(problem, "--weights", problem / "nope.caffemodel", "--out", problem / "r3"), "not found")


def test_loop_with_another_criterion(problem: Path) -> None:
    """The same loop with the L1 criterion: the removed neurons are the lowest-L1 ones."""
    result = trim(problem, "--criterion", "l1", "--iterations", "1")
    assert result.returncode == 0, result.stderr[-3000:]

    chosen = json.loads((problem / "run/iter-01/selection.json").read_text())["layers"]
    with Caffemodel(problem / "baseline.caffemodel") as model:
        for entry in chosen:
            w = model.arrays(entry["layer"])[0]
            l1 = np.abs(w.reshape(w.shape[0], -1)).sum(axis=1)
            assert sorted(entry["remove"]) == sorted(np.argsort(l1)[: len(entry["remove"])].tolist())
    assert report(problem)["iterations"][0]["widths"] == "6-6-9-10"
    assert_one_line_error(
        trim(problem, "--criterion", "nope", "--out", problem / "x"), "invalid choice: 'nope'", code=2
    )


def test_shipped_schedules_load() -> None:
    lenet = load_schedule(ROOT / "prototxt/lenet/trim.toml")
    assert lenet.plan.layers == ["conv2", "ip1"] and lenet.train_missing_weights and lenet.iterations == 8
    assert lenet.net.is_file() and lenet.finetune_solver.is_file() and lenet.retries == 2
    assert lenet.plan.eval_every == 250 and lenet.plan.max_finetune_iters == 4000
    for path in sorted(ROOT.glob("prototxt/*/trim.toml")):  # every shipped schedule reads
        found = load_schedule(path)
        assert found.net.is_file() and found.finetune_solver.is_file(), path
    vgg = load_schedule(ROOT / "prototxt/vgg16/trim.toml")
    assert vgg.plan.layers == ["conv5_3", "fc6"] and vgg.tolerance == 0.0 and not vgg.train_missing_weights


def test_fold_mean_reports_top1_with_and_without_folding(problem: Path) -> None:
    result = trim(problem, "--iterations", "1", "--fold-mean")
    assert result.returncode == 0, result.stderr[-3000:]
    (entry,) = report(problem)["iterations"]
    assert entry["top1_trimmed_nofold"] is not None and entry["verify_max_relative_diff"] <= 1e-5
    assert "means not folded" in (problem / "run/report.md").read_text()
    assert (problem / "run/iter-01/nofold/trimmed.caffemodel").is_file()


def rep_scores(problem: Path, name: str, iteration: int = 0) -> Path:
    """The per-image values an evaluation step kept (logs/scores-<name>.npz)."""
    folder = problem / "run" / (f"iter-{iteration:02d}" if iteration else "") / "logs"
    return folder / f"scores-{name.replace('@', '-')}.npz"


def test_decisions_use_the_validation_split_and_the_paper_figures_are_written(problem: Path) -> None:
    write_net(problem / "s.toml", (problem / "schedule.toml").read_text().replace("scratch = false", "scratch = true"))
    result = trim(problem, schedule="s.toml")
    assert result.returncode == 0, result.stderr[-3000:]
    rep = report(problem)
    assert rep["decisions_on"] == "validation" and rep["baseline"]["val_top1"] is not None
    for entry in rep["iterations"]:
        better = "retrained" if entry["val_top1_retrained"] >= entry["val_top1_trimmed"] else "trimmed"
        assert entry["kept"] == better
        assert entry["top1"] == entry[f"top1_{better}"] and entry["top1_stderr"] > 0
        assert set(entry["curve"]) == {"0", "10", "20"}  # the test set scored every 10 iterations
    assert rep["final"]["mean_apoz"] and rep["scratch"]["mean_apoz"]  # the paper's ablation: APoZ beside
    text = (problem / "run/report.md").read_text()
    assert "validation split" in text and "Final net" in text and "standard error" in text
    first = rep["iterations"][0]
    row = text.split("| Trim-1 |")[1].split("\n")[0]
    difference = f"{100 * first['difference']:+.2f} ± {100 * first['difference_stderr']:.2f}"
    assert f"| {first['kept']} | {first['top1']:.2%} | {difference} | {'yes' if first['accepted'] else 'no'} |" in row
    # The paired difference is the mean of the per-image differences on the validation split.
    base = np.load(rep_scores(problem, "baseline@val"))["values"]
    kept = np.load(rep_scores(problem, f"{first['kept']}@val", 1))["values"]
    assert first["difference"] == pytest.approx((kept - base).mean())
    assert first["difference_stderr"] == pytest.approx((kept - base).std(ddof=1) / np.sqrt(base.size))
    cost = first["cost"]
    assert cost["macs_ratio"] > 1 and cost["params_ratio"] > 1 and cost["speedup_batch1"] > 0
    for figure in ("accuracy_vs_retraining.png", "apoz_histograms.png"):
        assert (problem / "run" / figure).stat().st_size > 5000
    state = json.loads((problem / "run/state.json").read_text())
    assert "collect" in state["final"]["steps"] and "collect" in state["scratch"]["steps"]


def test_the_loop_on_ray_workers_makes_the_same_choices(problem: Path) -> None:
    """--workers reaches the loop's statistics and evaluations: the same neurons are chosen
    and the same accuracies measured as in one process (one BLAS thread in both)."""
    import os

    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "pytrim", "trim", "--quiet", "--schedule", str(problem / "schedule.toml")]
    for out, extra in (("alone", []), ("ray", ["--workers", "2"])):
        command = [*base, "--iterations", "1", "--out", str(problem / out), *extra]
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
    chosen = [json.loads((problem / out / "iter-01/selection.json").read_text()) for out in ("alone", "ray")]
    assert chosen[0] == chosen[1]

    assert [load_stats(problem / out / "iter-01/stats.h5").source["shards"] for out in ("alone", "ray")] == ["1", "2"]
    reports = [json.loads((problem / out / "report.json").read_text()) for out in ("alone", "ray")]
    assert reports[0]["baseline"]["top1"] == reports[1]["baseline"]["top1"]


def test_steps_side_by_side_give_the_serial_report(problem: Path) -> None:
    """The cut net's evaluations run beside its retraining (--jobs, default: the cores);
    --jobs 1 runs them one after another: the same weights and the same report, timings
    aside."""
    for out, extra in (("serial", ["--jobs", "1"]), ("together", ["--jobs", "3"])):
        done = trim(problem, "--iterations", "2", "--no-scratch", "--out", problem / out, *extra)
        assert done.returncode == 0, done.stderr[-3000:]
    for name in ("iter-01/retrained.caffemodel", "iter-02/retrained.caffemodel"):
        assert (problem / "serial" / name).read_bytes() == (problem / "together" / name).read_bytes()

    def untimed(rep: dict) -> dict:
        for entry in rep["iterations"]:
            entry.pop("cost"), entry.pop("seconds")
        return rep

    serial, together = (untimed(json.loads((problem / o / "report.json").read_text())) for o in ("serial", "together"))
    assert serial["iterations"] and serial["iterations"] == together["iterations"]
    assert serial["baseline"] == together["baseline"]
