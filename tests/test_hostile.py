"""A hostile but realistic user, the whole probe in one module (three integrity rounds, the
table of docs/errors.md): every case ends with one `error:` line naming the file, exit code 1
(2 for an option argparse refuses), the inputs' SHA-256 unchanged and nothing written.

The nets, data and statistics are made once for the module (`inputs`, `split`); cases never
change them (each checks their digests) and write only under their own `tmp_path`."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    FILL,
    ROOT,
    assert_one_line_error,
    files_under,
    filler_weights,
    net_text,
    pytrim,
    small_body,
    toy_db,  # fmt: skip
    write_net,
)

from pytrim.caffeio.caffemodel import Caffemodel, CaffemodelError
from pytrim.caffeio.env import CORETYPE_FLAGS, caffe_pb2, cpu_info
from pytrim.caffeio.lmdb import write_datums as write_lmdb
from pytrim.caffeio.proto import read_net, write_text
from pytrim.core.files import move
from pytrim.surgery.choose import Selection
from pytrim.surgery.cut import cut
from pytrim.surgery.verify import verify


def digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` and its SHA-256: inputs must come out unchanged (an LMDB's
    lock.mdb aside: its reader table changes whenever the database is read)."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "lock.mdb"}  # fmt: skip


@pytest.fixture(scope="module")
def made(caffe, tmp_path_factory) -> dict[str, Path]:
    """The small net (train_val + deploy + filler caffemodel on 25 toy images, batch 10) with
    statistics and a selection made from them, once for the module."""
    d = tmp_path_factory.mktemp("inputs")
    db = toy_db(d / "db", 25)
    net = write_net(d / "train_val.prototxt", net_text(small_body, [10, 1, 28, 28], (db, db, 10)))
    deploy = write_net(d / "deploy.prototxt", net_text(small_body, [4, 1, 28, 28]))
    weights = filler_weights(caffe, net, d / "small.caffemodel")
    out = d / "made"
    r = pytrim("collect", "--net", net, "--weights", weights, "--out", out / "stats.h5", "--quiet")
    assert r.returncode == 0, r.stderr
    r = pytrim("choose", "--stats", out / "stats.h5", "--layers", "conv2", "--out", out / "sel.json")
    assert r.returncode == 0, r.stderr
    return {"net": net, "deploy": deploy, "weights": weights, "db": db, "dir": d, "stats": out / "stats.h5",
            "selection": out / "sel.json"}  # fmt: skip


@pytest.fixture
def inputs(made: dict[str, Path]):
    """The module's inputs, their SHA-256 checked after every case."""
    before = digest(made["dir"])
    yield made
    assert digest(made["dir"]) == before, "a case changed the inputs"


def edited(net: Path, out: Path, change) -> Path:
    """A copy of a prototxt with `change(layer)` applied to every layer."""
    param = read_net(net)
    for layer in param.layer:
        change(layer)
    return write_text(param, out)


# --- inputs are never overwritten ------------------------------------------------------------


def test_outputs_that_are_or_hold_an_input_are_refused(inputs: dict[str, Path], tmp_path: Path) -> None:
    n, w, d = inputs["net"], inputs["weights"], inputs["dir"]
    solver = write_net(tmp_path / "s.prototxt", f'net: "{n}"\nbase_lr: 0.1\nmax_iter: 1\n')
    cases = [
        (("cut", "--net", n, "--weights", w, "--selection", inputs["selection"], "--out", d), "contains"),
        (("collect", "--net", n, "--weights", w, "--out", w), "is the input --weights"),
        (("choose", "--stats", inputs["stats"], "--layers", "conv2", "--out", inputs["stats"]), "is the input --stats"),
        (("score", "--net", n, "--weights", w, "--criterion", "l1", "--layers", "conv2", "--out", n), "is the input"),
        (("train", "--solver", solver, "--weights", w, "--out", w), "is the input --weights"),
        (("collect", "--net", n, "--weights", w, "--out", tmp_path / "x.h5", "--plots", d), "contains"),
    ]
    for args, message in cases:
        assert_one_line_error(pytrim(*args, "--quiet") if args[0] != "choose" else pytrim(*args), message)
    assert files_under(tmp_path) == ["s.prototxt"]


# --- nets Caffe would abort on ----------------------------------------------------------------


def test_nets_caffe_cannot_build_are_one_line_errors(inputs: dict[str, Path], tmp_path: Path) -> None:
    n, w = inputs["net"], inputs["weights"]

    def missing_bottom(layer):
        if layer.name == "conv2":
            layer.bottom[0] = "conv9"

    def zero_width(layer):
        if layer.name == "conv2":
            layer.convolution_param.num_output = 0

    def huge_kernel(layer):
        if layer.name == "conv2":
            layer.convolution_param.kernel_size[0] = 40

    cases = [
        (missing_bottom, "collect", "layer 'conv2' reads blob 'conv9', which no earlier layer produces"),
        (missing_bottom, "evaluate", "no earlier layer produces"),
        (zero_width, "evaluate", "Caffe cannot build this net"),
        (huge_kernel, "collect", "Caffe cannot build this net"),
    ]
    for change, command, message in cases:
        net = edited(n, tmp_path / f"{change.__name__}.prototxt", change)
        args = ["--net", net, "--weights", w, "--quiet"] + (
            ["--out", tmp_path / "s.h5"] if command == "collect" else []
        )
        assert_one_line_error(pytrim(command, *args), str(net), message)
    assert not (tmp_path / "s.h5").exists()


def test_weights_that_do_not_fit_are_one_line_errors(caffe, inputs: dict[str, Path], tmp_path: Path) -> None:
    n, w = inputs["net"], inputs["weights"]
    lenet = tmp_path / "lenet.caffemodel"
    caffe.Net(str(ROOT / "prototxt/lenet/deploy.prototxt"), caffe.TEST).save(str(lenet))
    r = pytrim("evaluate", "--net", n, "--weights", lenet, "--quiet")
    assert_one_line_error(r, "does not match", "conv1 blob 0: shape (6, 1, 3, 3)", "(20, 1, 5, 5)")
    r = pytrim("compare", "--net", n, "--weights", w, "--trimmed-weights", lenet)
    assert_one_line_error(r, "does not match")
    # Two caffemodels concatenated: Caffe would load each copy in turn; refused by name.
    twice = tmp_path / "twice.caffemodel"
    twice.write_bytes(lenet.read_bytes() + w.read_bytes())
    assert_one_line_error(pytrim("evaluate", "--net", n, "--weights", twice, "--quiet"), "stored 2 times")
    # A prototxt whose conv2 has 3x3 kernels against 5x5 weights: cut checks every blob.
    five = edited(n, tmp_path / "five.prototxt", lambda layer: None)
    param = read_net(five)
    for layer in param.layer:
        if layer.name == "conv2":
            layer.convolution_param.kernel_size[0] = 5
    write_text(param, five)
    caffe.set_random_seed(2)
    caffe.Net(str(five), caffe.TEST).save(str(tmp_path / "five.caffemodel"))
    plain = write_net(tmp_path / "sel.json", json.dumps({"layers": [{"layer": "conv2", "width": 8, "keep": [0, 1],
                                                                      "remove": [2, 3, 4, 5, 6, 7]}]}))  # fmt: skip
    r = pytrim("cut", "--net", n, "--weights", tmp_path / "five.caffemodel", "--selection", plain,
               "--out", tmp_path / "cut")  # fmt: skip
    assert_one_line_error(r, "conv2 blob 0: shape (8, 6, 3, 3)", "(8, 6, 5, 5)")
    assert not (tmp_path / "cut").exists()


def test_bad_data_is_a_one_line_error(inputs: dict[str, Path], tmp_path: Path) -> None:
    w = inputs["weights"]
    empty = write_lmdb(np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8), tmp_path / "empty", progress=False)
    wrong = toy_db(tmp_path / "wrong", 6, side=32)
    mixed = tmp_path / "mixed"
    import lmdb

    with lmdb.open(str(mixed), map_size=1 << 22) as env, env.begin(write=True) as txn:
        for i, side in enumerate((28, 28, 32)):
            datum = caffe_pb2().Datum(channels=1, height=side, width=side, data=bytes(side * side), label=1)
            txn.put(f"{i:08d}".encode(), datum.SerializeToString())
    for source, message in ((empty, "is empty"), (wrong, "does not match"), (mixed, "records of different sizes")):
        net = write_net(tmp_path / f"{source.name}.prototxt", net_text(small_body, [3, 1, 28, 28], (source, source, 3)))
        assert_one_line_error(pytrim("evaluate", "--net", net, "--weights", w, "--quiet"), message)
    assert_one_line_error(pytrim("evaluate", "--net", inputs["net"], "--weights", w, "--images", "0"), "--images",
                          code=2)  # fmt: skip


# --- files that are not what they claim -----------------------------------------------------


def test_damaged_files_are_one_line_errors(inputs: dict[str, Path], tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(inputs["stats"].read_bytes()[:500])
    r = pytrim("choose", "--stats", truncated, "--layers", "conv2", "--out", tmp_path / "s.json")
    assert_one_line_error(r, str(truncated), "not a readable pytrim statistics file")
    as_list = write_net(tmp_path / "list.json", "[1, 2]")
    not_json = write_net(tmp_path / "broken.json", '{"layers": [')
    for selection, message in ((as_list, "the top level is a list"), (not_json, "not a valid selection file")):
        r = pytrim("cut", "--net", inputs["net"], "--weights", inputs["weights"], "--selection", selection,
                   "--out", tmp_path / "cut")  # fmt: skip
        assert_one_line_error(r, str(selection), message)
    assert not (tmp_path / "cut").exists() and not (tmp_path / "s.json").exists()


def test_hostile_caffemodel_is_rejected_in_linear_time(tmp_path: Path) -> None:
    for size in (1 << 20, 10 << 20):
        hostile = tmp_path / f"ff-{size}.caffemodel"
        hostile.write_bytes(b"\xff" * size)
        start = time.monotonic()
        with pytest.raises(CaffemodelError, match="varint longer than 10 bytes"):
            Caffemodel(hostile)
        assert time.monotonic() - start < 1.0
    # Valid varints, an absurd length: refused without reading past the end.
    (tmp_path / "long.caffemodel").write_bytes(b"\xa2\x06\xff\xff\xff\xff\x0f" + b"\x00" * 100)
    with pytest.raises(CaffemodelError, match="truncated"):
        Caffemodel(tmp_path / "long.caffemodel")


# --- the machine says no ---------------------------------------------------------------------


def limited(size: int):
    """A child whose files may not grow beyond `size` bytes: writes past it fail with EFBIG,
    as on a full disk (SIGXFSZ ignored, so the write fails instead of killing the child)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return apply


def test_a_full_disk_or_unwritable_folder_leaves_no_partial_output(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cut"
    args = ["--net", inputs["net"], "--deploy", inputs["deploy"], "--weights", inputs["weights"], "--selection",
            inputs["selection"], "--out", out]  # fmt: skip
    # The prototxts fit under the limit, the caffemodel does not.
    assert max(inputs["net"].stat().st_size, inputs["deploy"].stat().st_size) < 8000 < inputs["weights"].stat().st_size
    r = pytrim("cut", *args, preexec_fn=limited(8000))
    assert_one_line_error(r, "File too large", str(out / "trimmed.caffemodel"))
    assert files_under(out) == []
    # A statistics file (HDF5 would crash on a failed write): one line naming it, no partial file.
    stats = tmp_path / "stats/s.h5"
    r = pytrim("collect", "--net", inputs["net"], "--weights", inputs["weights"], "--out", stats, "--quiet",
               preexec_fn=limited(3000))  # fmt: skip
    assert_one_line_error(r, "File too large", str(stats))
    assert files_under(stats.parent) == []
    r = pytrim("collect", "--net", inputs["net"], "--weights", inputs["weights"], "--out", "/sys/pytrim-stats.h5",
               "--quiet")  # fmt: skip
    assert_one_line_error(r, "Permission denied", "/sys/pytrim-stats.h5")


def test_a_programming_error_keeps_its_traceback() -> None:
    code = ("import pytrim.cli.probe as p\np.execute = lambda args: {}['missing']\nfrom pytrim.cli import run\n"
            "run('probe', ['--net', 'x.prototxt'])\n")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 1 and "Traceback" in result.stderr and "KeyError: 'missing'" in result.stderr
    assert "error: " not in result.stderr
    code = "import pytrim.cli.probe as p\nfrom pytrim.core.errors import BadInput\nfrom pytrim.cli import run\n"
    code += "def fail(args):\n    raise BadInput('x')\np.execute = fail\nrun('probe', ['--net', 'x.prototxt'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 1 and result.stderr == "error: x\n"


def test_child_results_come_from_json_not_from_log_text(inputs: dict[str, Path], tmp_path: Path) -> None:
    """Every command can write its result as JSON (what the loop reads); its printed text is free."""
    r = pytrim("evaluate", "--net", inputs["net"], "--weights", inputs["weights"], "--quiet", "--result",
               tmp_path / "e.json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "e.json").read_text())
    assert set(result) >= {"top1", "top5", "images", "top1_stderr", "metric", "value", "stderr"}
    assert result["images"] == 25 and result["metric"] == "accuracy" and result["value"] == result["top1"]


# --- outputs never clobber, checks cannot be fooled (the second hostile-user round) -------------


def test_result_never_replaces_an_input_or_another_output(inputs: dict[str, Path], tmp_path: Path) -> None:
    before = digest(inputs["dir"])
    n, w, stats, sel, db = inputs["net"], inputs["weights"], inputs["stats"], inputs["selection"], inputs["db"]
    cases = [
        (("collect", "--net", n, "--weights", w, "--out", tmp_path / "s.h5", "--result", w), "is the input --weights"),
        (("choose", "--stats", stats, "--layers", "conv2", "--out", tmp_path / "x.json", "--result", stats), "--stats"),
        (("cut", "--net", n, "--weights", w, "--selection", sel, "--out", tmp_path / "c", "--result", sel),
         "--selection"),
        (("evaluate", "--net", n, "--weights", w, "--result", db / "data.mdb"), "data read by"),
        (("verify", "--net", n, "--weights", w, "--trimmed-net", n, "--trimmed-weights", w, "--selection", sel,
          "--result", w), "is the input"),
        (("collect", "--net", n, "--weights", w, "--out", tmp_path / "same", "--result", tmp_path / "same"),
         "same path"),
        (("collect", "--net", n, "--weights", w, "--out", db / "data.mdb"), "data read by"),
        (("collect", "--net", n, "--weights", w, "--out", tmp_path / "p.h5", "--plots", db), "data read by"),
    ]  # fmt: skip
    for args, message in cases:
        assert_one_line_error(pytrim(*args, "--quiet"), message)
    assert digest(inputs["dir"]) == before
    assert not (tmp_path / "s.h5").exists() and not (tmp_path / "c").exists() and not (tmp_path / "p.h5").exists()


def test_a_foreign_folder_is_never_written_into(inputs: dict[str, Path], tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "deploy.prototxt").write_text("a user's file\n")
    (mine / "train.log").write_text("a user's log\n")
    n, w, sel = inputs["net"], inputs["weights"], inputs["selection"]
    solver = write_net(tmp_path / "s.prototxt", f'net: "{n}"\nbase_lr: 0.01\nmax_iter: 1\nsolver_mode: CPU\n')
    cases = [
        ("cut", "--net", n, "--deploy", inputs["deploy"], "--weights", w, "--selection", sel, "--out", mine),
        ("train", "--solver", solver, "--out", tmp_path / "t.caffemodel", "--workdir", mine, "--no-eval"),
        ("synthetic", "--net", inputs["deploy"], "--out", mine),
        ("relief", "--nets", "lenet5", "--out", mine),
        ("sweep-criteria", "--nets", "lenet5", "--out", mine),
        ("collect", "--net", n, "--weights", w, "--out", tmp_path / "p.h5", "--plots", mine),
    ]
    before = digest(mine)
    for args in cases:
        assert_one_line_error(pytrim(*args, "--quiet"), "is not empty and is not a pytrim")
    assert digest(mine) == before and not (tmp_path / "t.caffemodel").exists() and not (tmp_path / "p.h5").exists()


def test_a_second_command_on_a_folder_in_use_is_refused(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "synthetic"
    command = [sys.executable, "-m", "pytrim", "synthetic", "--net", str(inputs["deploy"]), "--out", str(out)]
    first = subprocess.Popen([*command, "--quiet"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            if (out / ".pytrim-lock").exists():
                break
            time.sleep(0.05)
        assert_one_line_error(pytrim("synthetic", "--net", inputs["deploy"], "--out", out, "--quiet"),
                              "in use by another pytrim run")  # fmt: skip
    finally:
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]


def tampered(caffemodel: Path, layer: str, out: Path) -> Path:
    """A copy of a caffemodel with one weight of `layer` changed."""
    with Caffemodel(caffemodel) as model:
        arrays = [a.copy() for a in model.arrays(layer)]
        arrays[0].reshape(-1)[0] += 1.0
        model.write(out, {layer: arrays})
    return out


def test_a_changed_weight_fails_verification_even_with_allow_inexact(inputs: dict[str, Path], tmp_path: Path) -> None:
    n, w, sel = inputs["net"], inputs["weights"], inputs["selection"]
    made = pytrim("cut", "--net", n, "--weights", w, "--selection", sel, "--out", tmp_path / "cut", "--repeats", "0")
    assert made.returncode == 0, made.stderr
    bad = tampered(tmp_path / "cut/trimmed.caffemodel", "ip1", tmp_path / "bad.caffemodel")
    for extra in ((), ("--allow-inexact",), ("--allow-inexact", "--inexact-tol", "1000")):
        r = pytrim("verify", "--net", n, "--weights", w, "--trimmed-net", tmp_path / "cut/train_val.prototxt",
                   "--trimmed-weights", bad, "--selection", sel, "--quiet", *extra)  # fmt: skip
        assert_one_line_error(r, "verification failed", "'ip1'")
        assert "resume" not in r.stderr  # a standalone verify has nothing to resume


def test_verification_of_a_net_that_computes_nothing_fails(caffe, inputs: dict[str, Path], tmp_path: Path) -> None:
    zeros = tmp_path / "zeros.caffemodel"
    net = caffe.Net(str(inputs["deploy"]), caffe.TEST)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = 0
    net.save(str(zeros))
    sel = {"conv2": Selection("conv2", 8, np.arange(4), np.arange(4, 8))}
    out = tmp_path / "cut"
    cut([inputs["deploy"]], zeros, sel, [out / "deploy.prototxt"], out / "t.caffemodel")
    check = verify(inputs["deploy"], zeros, out / "deploy.prototxt", out / "t.caffemodel", sel)
    assert not check.ok and "constant" in check.failure() and check.max_relative == 0


def test_folded_means_must_come_from_the_same_weights(caffe, inputs: dict[str, Path], tmp_path: Path) -> None:
    n, w, sel = inputs["net"], inputs["weights"], inputs["selection"]
    other = tampered(w, "conv1", tmp_path / "other.caffemodel")
    r = pytrim("collect", "--net", n, "--weights", other, "--out", tmp_path / "means.h5", "--keep-means", "--quiet")
    assert r.returncode == 0, r.stderr
    for command in ("cut", "verify"):
        extra = ["--out", tmp_path / "c"] if command == "cut" else ["--trimmed-net", n, "--trimmed-weights", w]
        r = pytrim(command, "--net", n, "--weights", w, "--selection", sel, "--fold-mean", "--stats",
                   tmp_path / "means.h5", *extra, "--quiet")  # fmt: skip
        assert_one_line_error(r, "measured on", "other.caffemodel")
    assert not (tmp_path / "c").exists()


def test_bad_option_values_fail_before_any_work(inputs: dict[str, Path], tmp_path: Path) -> None:
    w, stats = inputs["weights"], inputs["stats"]
    choose_ = ("choose", "--stats", stats, "--out", tmp_path / "s.json")
    assert_one_line_error(pytrim(*choose_, "--layers", "conv2", "--k", "nan"), "finite", code=2)
    assert_one_line_error(pytrim(*choose_, "--layers", "conv2", "--ratio", "ip1=0.5"), "ip1, not in --layers")
    assert_one_line_error(pytrim(*choose_, "--layers", "conv2", "--min-keep", "ip9=3"), "ip9, not in --layers")
    assert_one_line_error(pytrim("synthetic", "--net", inputs["deploy"], "--fraction", "1.5", "--out",
                                 tmp_path / "syn"), "a fraction in (0, 1)", code=2)  # fmt: skip
    assert_one_line_error(pytrim("coverage", "--nets", "bogus", "--out", tmp_path / "cov"), "unknown bogus")
    assert not (tmp_path / "s.json").exists() and not (tmp_path / "syn").exists() and not (tmp_path / "cov").exists()
    assert_one_line_error(pytrim("evaluate", "--net", inputs["deploy"], "--weights", w, "--feed", inputs["db"],
                                 "--workers", "2"), "not a --feed")  # fmt: skip


def test_errors_after_an_output_was_written_remove_it(inputs: dict[str, Path], tmp_path: Path) -> None:
    """An output that cannot be written (its folder is a file: tests run as root, whom
    permissions do not stop) fails the command, and what it wrote before is removed."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    n, w = inputs["net"], inputs["weights"]
    r = pytrim("collect", "--net", n, "--weights", w, "--out", tmp_path / "s.h5", "--plots", blocker / "p", "--quiet")
    assert_one_line_error(r, "is a file, not a folder")
    assert not (tmp_path / "s.h5").exists()
    r = pytrim("choose", "--stats", inputs["stats"], "--layers", "conv2", "--out", tmp_path / "sel.json",
               "--result", blocker / "r.json")  # fmt: skip
    assert_one_line_error(r, "is a file, not a folder")
    assert not (tmp_path / "sel.json").exists()  # written before --result failed, then removed


def test_a_changed_database_is_written_again(idx_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "lenet"
    args = ["prepare-lenet", "--dataset", "mnist", "--from", idx_dataset, "--out", out, "--val-images", "8", "--quiet"]
    assert pytrim(*args).returncode == 0
    assert "up to date" in pytrim(*args).stdout
    with (out / "test_lmdb/data.mdb").open("r+b") as handle:
        handle.write(b"\0" * 64)  # a changed database is no longer the one written
    again = pytrim(*args)
    assert again.returncode == 0 and "wrote mnist as LMDB" in again.stdout


def test_a_move_to_another_filesystem_is_a_copy_then_a_rename(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem here")
    source = shm / f"pytrim-move-{time.time_ns()}"
    source.write_bytes(b"weights")
    target = move(source, tmp_path / "deep/target.caffemodel")
    assert target.read_bytes() == b"weights" and not source.exists() and not list(target.parent.glob("*.partial"))


def test_training_is_the_same_whatever_kernels_the_machine_would_pick(inputs: dict[str, Path], tmp_path: Path) -> None:
    """Children that train run with one BLAS kernel family pinned (pytrim.caffeio.env): a machine
    whose OpenBLAS would pick other kernels (OPENBLAS_CORETYPE set here to stand in for one)
    trains the same weights, bit for bit."""
    n, w = inputs["net"], inputs["weights"]
    solver = write_net(tmp_path / "s.prototxt", f'net: "{n}"\nbase_lr: 0.05\nmomentum: 0.9\nmax_iter: 20\n'
                       'lr_policy: "fixed"\nsolver_mode: CPU\nrandom_seed: 5\n')  # fmt: skip
    flags = cpu_info()["flags"]  # a family the CPU lacks (SkylakeX without AVX-512) dies of SIGILL
    machines = [m for m in ("SkylakeX", "Zen", "Sandybridge", "Nehalem") if CORETYPE_FLAGS[m] <= flags][:3]
    if len(machines) < 2:
        pytest.skip(f"this CPU runs fewer than two OpenBLAS kernel families of {sorted(CORETYPE_FLAGS)}: {machines}")
    trained = []
    for machine in machines:
        out = tmp_path / f"{machine}.caffemodel"
        env = {**os.environ, "OPENBLAS_CORETYPE": machine}
        r = pytrim("train", "--solver", solver, "--weights", w, "--out", out, "--no-eval", "--quiet", env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        with Caffemodel(out) as model:
            trained.append({name: [a.copy() for a in model.arrays(name)] for name in model.layers})
    for other in trained[1:]:
        assert all(np.array_equal(a, b) for name in other for a, b in zip(trained[0][name], other[name], strict=True))


# --- Integrity III: every phase's data is an input, a marker protects only its own folder -----


@pytest.fixture(scope="module")
def split(caffe, tmp_path_factory) -> dict[str, Path]:
    """A net whose TRAIN and TEST phases read different LMDBs (relative paths, as in
    prototxt/lenet), a validation LMDB no net reads, a solver and a schedule, once."""
    d = tmp_path_factory.mktemp("split")
    for name, n, seed in (("train_lmdb", 30, 1), ("test_lmdb", 20, 2), ("val_lmdb", 20, 3)):
        toy_db(d / name, n, seed=seed)
    net = write_net(d / "train_val.prototxt",
                    net_text(small_body, [10, 1, 28, 28], (d / "train_lmdb", d / "test_lmdb", 10)))  # fmt: skip
    weights = filler_weights(caffe, net, d / "w.caffemodel")
    solver = write_net(d / "solver.prototxt", f'net: "{net}"\nbase_lr: 0.01\nmax_iter: 2\nsolver_mode: CPU\n')
    schedule = write_net(d / "trim.toml", f'net = "{net}"\nweights = "{weights}"\nbaseline_solver = "{solver}"\n'
                         f'finetune_solver = "{solver}"\nout = "{d}/run"\niterations = 1\nscratch = false\n'
                         '[trim]\nlayers = ["conv2"]\nrule = "ratio"\nratio = 0.25\nfinetune_iters = 2\n')  # fmt: skip
    return {"dir": d, "net": net, "weights": weights, "solver": solver, "schedule": schedule,
            "train": d / "train_lmdb", "val": d / "val_lmdb"}  # fmt: skip


def refused(cases: list[tuple[tuple, str]], folder: Path, code: int = 1) -> None:
    """Each command one `error:` line with its needle; nothing under `folder` changed or added."""
    before = digest(folder)
    for args, needle in cases:
        assert_one_line_error(pytrim(*args, "--quiet"), needle, code=code)
    assert digest(folder) == before


def test_training_data_and_any_lmdb_are_inputs(split: dict[str, Path], tmp_path: Path) -> None:
    n, w, s, t = split["net"], split["weights"], split["solver"], split["train"]
    trim = ("trim", "--schedule", split["schedule"])
    refused([
        (("collect", "--net", n, "--weights", w, "--out", t / "data.mdb"), "data read by --net"),
        (("collect", "--net", n, "--weights", w, "--out", tmp_path / "s.h5", "--plots", t), "data read by --net"),
        (("train", "--solver", s, "--out", t / "data.mdb", "--no-eval"), "data read by --solver"),
        (("train", "--solver", s, "--out", tmp_path / "m.caffemodel", "--workdir", t, "--no-eval"), "data read by"),
        ((*trim, "--out", t), "data read by"),
        ((*trim, "--out", tmp_path / "run", "--result", t / "data.mdb"), "data read by"),
        (("evaluate", "--net", n, "--weights", w, "--out", split["val"] / "data.mdb"), "inside the LMDB"),
    ], split["dir"])  # fmt: skip
    assert files_under(tmp_path) == []


def marked(folder: Path, kind: str) -> Path:
    """A folder as pytrim's command `kind` leaves it (its marker), with a user's file inside."""
    (folder / "user").mkdir(parents=True)
    (folder / ".pytrim-run").write_text(json.dumps({"kind": kind}) + "\n")
    (folder / "user/deploy.prototxt").write_text("a user's file\n")
    (folder / "user/train.log").write_text("a user's log\n")
    return folder


def test_a_marker_protects_only_its_own_folder(inputs: dict[str, Path], tmp_path: Path) -> None:
    n, w, sel, dep = inputs["net"], inputs["weights"], inputs["selection"], inputs["deploy"]
    data = marked(tmp_path / "data", "prepare-lenet")
    run = marked(tmp_path / "run", "trim")
    (run / "iter-01").mkdir()
    (run / "iter-01/trimmed.caffemodel").write_bytes(b"the run's weights")
    solver = write_net(tmp_path / "s.prototxt", f'net: "{n}"\nbase_lr: 0.01\nmax_iter: 1\nsolver_mode: CPU\n')
    cut_ = ("cut", "--net", n, "--deploy", dep, "--weights", w, "--selection", sel, "--out")
    refused([
        ((*cut_, data / "user"), "a pytrim prepare-lenet folder"),
        ((*cut_, data / "mine"), "inside"),
        ((*cut_, run / "iter-01"), "a pytrim trim folder"),
        (("train", "--solver", solver, "--out", tmp_path / "t.caffemodel", "--workdir", run / "user", "--no-eval"),
         "only that command writes there"),
        (("synthetic", "--net", dep, "--out", run / "usersub"), "inside"),
        (("relief", "--nets", "lenet5", "--out", run / "rel"), "inside"),
        (("collect", "--net", n, "--weights", w, "--out", run / "iter-01/stats.h5"), "a pytrim trim folder"),
        (("synthetic", "--net", dep, "--out", run), "is a pytrim trim folder"),
    ], tmp_path)  # fmt: skip
    assert not (tmp_path / "t.caffemodel").exists()


def test_a_step_of_a_run_writes_inside_it(inputs: dict[str, Path], tmp_path: Path) -> None:
    """The run's own children (PYTRIM_RUNS names the run folders of the processes above) may."""
    run = marked(tmp_path / "run", "trim")
    cut_ = ("cut", "--net", inputs["net"], "--weights", inputs["weights"], "--selection", inputs["selection"])
    r = pytrim(*cut_, "--out", run / "iter-01", "--repeats", "0", env={**os.environ, "PYTRIM_RUNS": str(run)})
    assert r.returncode == 0, r.stderr
    assert (run / "iter-01/trimmed.caffemodel").is_file() and not (run / "iter-01/.pytrim-run").exists()


def test_a_run_changed_from_outside_is_one_error_offering_restart(tmp_path: Path) -> None:
    """A run records the SHA-256 of what its steps wrote: when it fails on a file changed from
    outside, the error names it and offers --restart (test_loop runs it end to end)."""
    from pytrim.core.errors import CaffeCrashed
    from pytrim.loop.state import RunState

    out = tmp_path / "trimmed.caffemodel"
    out.write_bytes(b"what the step wrote")
    state = RunState(tmp_path)
    state.keep(state.attempt(1), "cut", "key", {"params": 1}, 0.1, [out])
    failure = CaffeCrashed("verify (Trim-1) failed (exit code 1): verification failed\n  tail")
    assert RunState(tmp_path).changed() == [] and RunState(tmp_path).damaged(failure) is None
    out.write_bytes(b"another command's weights")
    damaged = RunState(tmp_path).damaged(failure)
    assert damaged is not None and RunState(tmp_path).changed() == [str(out)]
    assert str(damaged).startswith(f"{out} changed after this run wrote it, and the run fails on it (verify")
    assert "--restart" in str(damaged) and "\n" not in str(damaged)


def test_an_output_never_lies_inside_another(inputs: dict[str, Path], split: dict[str, Path], tmp_path: Path) -> None:
    n, w, sel = inputs["net"], inputs["weights"], inputs["selection"]
    r, d = tmp_path / "R", tmp_path / "D"
    refused([
        (("cut", "--net", n, "--weights", w, "--selection", sel, "--out", r, "--result", r / "trimmed.caffemodel"),
         "is inside --out"),
        (("collect", "--net", n, "--weights", w, "--out", tmp_path / "s.h5", "--plots", d, "--result",
          d / "apoz_conv2.png"), "is inside --plots"),
        (("trim", "--schedule", split["schedule"], "--out", r, "--result", r / "iter-01/retrained.caffemodel"),
         "another output of this command"),
    ], tmp_path)  # fmt: skip
    assert files_under(tmp_path) == []


# --- Integrity III: no value is silently wrong ---------------------------------------------------


def test_values_that_would_make_the_result_wrong(inputs: dict[str, Path], split: dict[str, Path],
                                                 tmp_path: Path) -> None:  # fmt: skip
    n, w, sel, dep = inputs["net"], inputs["weights"], inputs["selection"], inputs["deploy"]
    both = write_net(tmp_path / "both.json", json.dumps({"layers": [{"layer": "conv2", "width": 8, "keep": [0, 1, 2],
                                                                      "remove": [2, 3, 4, 5, 6, 7]}]}))  # fmt: skip
    short = write_net(tmp_path / "short.json", json.dumps({"layers": [{"layer": "conv2", "width": 8, "keep": [0, 1],
                                                                        "remove": [3, 4]}]}))  # fmt: skip
    verify_ = ("verify", "--net", n, "--weights", w, "--trimmed-net", n, "--trimmed-weights", w)
    ev = ("evaluate", "--net", n, "--weights", w)
    refused([
        (("trim", "--schedule", split["schedule"], "--out", tmp_path / "run", "--lower-is-better"),
         "lower_is_better needs a metric"),
        ((*ev, "--lower-is-better"), "--lower-is-better needs --metric"),
        ((*ev, "--metric", "ip2"), "not an output of the TEST net with one value per image or per batch"),
        ((*ev, "--metric", "conv1"), "the blobs that qualify: accuracy, loss"),
        ((*ev, "--metric", "label"), "the blobs that qualify"),
        ((*ev, "--metric", "conv9"), "not a blob of the TEST net"),
        (("cut", "--net", n, "--weights", w, "--selection", both, "--out", tmp_path / "c"), "channels 2 in both"),
        ((*verify_, "--selection", both), "in both keep and remove"),
        (("cut", "--net", n, "--weights", w, "--selection", short, "--out", tmp_path / "c"),
         "channels 2, 5, 6, 7 in neither"),
    ], tmp_path)  # fmt: skip
    refused([((*verify_, "--selection", sel, "--exact-tol", "-1"), "a tolerance must be >= 0"),
             (("export", "--net", dep, "--weights", w, "--out", tmp_path / "x.onnx", "--exact-tol", "-1"),
              "a tolerance must be >= 0")], tmp_path, code=2)  # fmt: skip
    assert files_under(tmp_path) == ["both.json", "short.json"]
    r = pytrim(*ev, "--metric", "loss", "--lower-is-better", "--quiet")
    assert r.returncode == 0 and "loss:" in r.stdout, r.stderr


def siamese(n, data):
    """Two towers sharing every parameter blob (`param { name }`), their outputs summed."""
    from caffe import layers as L

    shared = lambda tag: [{"name": f"{tag}_w"}, {"name": f"{tag}_b"}]  # noqa: E731
    n.a1 = L.InnerProduct(data, num_output=30, param=shared("ip1"), **FILL)
    n.b1 = L.InnerProduct(data, num_output=30, param=shared("ip1"), **FILL)
    n.a2 = L.InnerProduct(n.a1, num_output=10, param=shared("ip2"), **FILL)
    n.b2 = L.InnerProduct(n.b1, num_output=10, param=shared("ip2"), **FILL)
    n.out = L.Eltwise(n.a2, n.b2)
    return n.out


def test_shared_weights_are_counted_once(caffe, tmp_path: Path) -> None:
    from pytrim.caffeio.caffemodel import count_params
    from pytrim.stats.cost import size

    net = write_net(tmp_path / "siamese.prototxt", net_text(siamese, [2, 1, 8, 8]))
    weights = filler_weights(caffe, net, tmp_path / "siamese.caffemodel")
    unique = 64 * 30 + 30 + 30 * 10 + 10
    assert count_params(weights) == unique == size(net)["params"] == size(net, weights)["params"]


def test_a_difference_is_printed_at_the_metric_s_scale() -> None:
    from pytrim.loop.report import signed

    assert signed(0.0123, "loss", 0.0031) == "+0.0123 ± 0.0031"
    assert signed(-0.046, "loss") == "-0.046"
    assert signed(0.0004, "accuracy", 0.0021) == "+0.04 ± 0.21"


# --- Integrity III: no traceback, and every line says what and where ----------------------------


def test_tracebacks_become_one_line(inputs: dict[str, Path], tmp_path: Path) -> None:
    n, w, dep, db = inputs["net"], inputs["weights"], inputs["deploy"], inputs["db"]
    loop = tmp_path / "loop.caffemodel"
    loop.symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(loop)
    refused([
        (("evaluate", "--net", dep, "--weights", w, "--feed", db, "--mean", "1,2,3"),
         "3 values for a net whose input has 1 channel"),
        (("evaluate", "--net", n, "--weights", loop), "a symlink loop"),
        (("collect", "--net", n, "--weights", w, "--out", loop), "a symlink loop"),
        (("collect", "--net", n, "--weights", w, "--out", tmp_path / "s.h5", "--plots", loop / "plots"),
         "a symlink loop"),
    ], tmp_path)  # fmt: skip


def test_an_error_names_the_first_offenders_and_their_count(caffe, inputs: dict[str, Path], tmp_path: Path) -> None:
    def wide(n, data):
        from caffe import layers as L

        top = data
        for i in range(60):
            top = L.Convolution(top, num_output=1, kernel_size=1, **FILL)
            setattr(n, f"c{i}", top)
        return top

    net = write_net(tmp_path / "wide.prototxt", net_text(wide, [1, 1, 4, 4]))
    r = pytrim("evaluate", "--net", net, "--weights", inputs["weights"], "--feed", inputs["db"], "--quiet")
    assert_one_line_error(r, "has no weights in", "and 5", "more")
    assert len(r.stderr) < 2000


PYTHON_LAYER = """import caffe


class Identity(caffe.Layer):
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        pass
"""


def python_net(folder: Path, module: str, source: Path | None = None) -> Path:
    data = (
        (
            f'layer {{ name: "d" type: "Data" top: "data" top: "label" include {{ phase: TEST }} '
            f'data_param {{ source: "{source}" batch_size: 5 backend: LMDB }} }}\n'
        )
        if source
        else (
            'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 1 dim: 4 dim: 4 } } }\n'
        )
    )
    layers = (f'layer {{ name: "ident" type: "Python" bottom: "data" top: "out" python_param {{ module: "{module}" '
              'layer: "Identity" } }\nlayer { name: "conv1" type: "Convolution" bottom: "out" top: "conv1" '
              'convolution_param { num_output: 2 kernel_size: 3 } }\n')  # fmt: skip
    return write_net(folder / f"{module}.prototxt", 'name: "py"\n' + data + layers)


def test_python_layers_are_named_before_they_run(inputs: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "pylayer_ok.py").write_text(PYTHON_LAYER)
    (tmp_path / "pylayer_bad.py").write_text("import not_a_module_xyz\n")
    ok, bad = python_net(tmp_path, "pylayer_ok"), python_net(tmp_path, "pylayer_bad", inputs["db"])
    where = str(tmp_path / "pylayer_ok.py")
    plain = pytrim("probe", "--net", ok, "--quiet", cwd=tmp_path)
    assert_one_line_error(plain, "has Python layers", "'pylayer_ok' from " + where, "--allow-python-layers")
    allowed = pytrim("probe", "--net", ok, "--quiet", "--allow-python-layers", cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    assert f"note: {ok}: Python layers run code: layer 'ident' imports 'pylayer_ok' from {where}" in allowed.stderr
    failing = pytrim("probe", "--net", bad, "--quiet", "--allow-python-layers", cwd=tmp_path)
    assert_one_line_error(failing, "'pylayer_bad'", "fails to import: ModuleNotFoundError")
    r = pytrim("collect", "--net", bad, "--weights", inputs["weights"], "--out", tmp_path / "s.h5", "--quiet",
               "--allow-python-layers", cwd=tmp_path)  # fmt: skip
    assert_one_line_error(r, "Caffe cannot build this net", "ModuleNotFoundError", "(log: ")
    log = Path(r.stderr.split("(log: ")[-1].split(")")[0])
    assert log.is_file() and "not_a_module_xyz" in log.read_text()
    missing = python_net(tmp_path, "pylayer_nowhere")
    assert_one_line_error(pytrim("probe", "--net", missing, "--quiet", cwd=tmp_path), "'pylayer_nowhere' is not found")
    assert not (tmp_path / "s.h5").exists()
