"""A hostile but realistic user: every case ends with one `error:` line naming the file,
exit code 1, inputs unchanged and no partial output (the table in README.md)."""

from __future__ import annotations

import hashlib
import json
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, files_under, net_text, pytrim, small_body, toy_db, write_net

from pytrim.caffeio.caffemodel import Caffemodel, CaffemodelError
from pytrim.caffeio.env import caffe_pb2
from pytrim.caffeio.lmdb import write_datums as write_lmdb
from pytrim.caffeio.proto import read_net, write_text


def digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` and its content hash: inputs must come out unchanged."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def inputs(small_net: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """The small net's files plus statistics and a selection made from them."""
    out = tmp_path / "made"
    r = pytrim("collect", "--net", small_net["net"], "--weights", small_net["weights"], "--out", out / "stats.h5",
               "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = pytrim("choose", "--stats", out / "stats.h5", "--layers", "conv2", "--out", out / "sel.json")
    assert r.returncode == 0, r.stderr
    return small_net | {"stats": out / "stats.h5", "selection": out / "sel.json"}


def edited(net: Path, out: Path, change) -> Path:
    """A copy of a prototxt with `change(layer)` applied to every layer."""
    param = read_net(net)
    for layer in param.layer:
        change(layer)
    return write_text(param, out)


# --- inputs are never overwritten ------------------------------------------------------------


def test_outputs_that_are_or_hold_an_input_are_refused(inputs: dict[str, Path], tmp_path: Path) -> None:
    before = digest(tmp_path)
    n, w = inputs["net"], inputs["weights"]
    cases = [
        (("cut", "--net", n, "--weights", w, "--selection", inputs["selection"], "--out", tmp_path), "contains"),
        (("collect", "--net", n, "--weights", w, "--out", w), "is the input --weights"),
        (("choose", "--stats", inputs["stats"], "--layers", "conv2", "--out", inputs["stats"]), "is the input --stats"),
        (("score", "--net", n, "--weights", w, "--criterion", "l1", "--layers", "conv2", "--out", n), "is the input"),
        (
            (
                "train",
                "--solver",
                write_net(tmp_path / "s.prototxt", f'net: "{n}"\nbase_lr: 0.1\nmax_iter: 1\n'),
                "--weights",
                w,
                "--out",
                w,
            ),
            "is the input --weights",
        ),
        (("collect", "--net", n, "--weights", w, "--out", tmp_path / "x.h5", "--plots", tmp_path), "contains"),
    ]
    for args, message in cases:
        assert_one_line_error(pytrim(*args, "--quiet") if args[0] != "choose" else pytrim(*args), message)
    after = digest(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == {str(tmp_path / "s.prototxt")}


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
    r = pytrim("collect", "--net", inputs["net"], "--weights", inputs["weights"], "--out", "/sys/pytrim-stats.h5",
               "--quiet")  # fmt: skip
    assert_one_line_error(r, "Permission denied", "/sys/pytrim-stats.h5")


def test_a_programming_error_keeps_its_traceback() -> None:
    code = ("import pytrim.cli.probe as p\np.execute = lambda args: {}['missing']\nfrom pytrim.cli import run\n"
            "run('probe', ['--net', 'x.prototxt'])\n")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 1 and "Traceback" in result.stderr and "KeyError: 'missing'" in result.stderr
    assert "error: " not in result.stderr
    code = "from pytrim.cli import run\nfrom pytrim.core.errors import BadInput\n"
    code += "def main():\n    raise BadInput('x')\nrun(main)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 1 and result.stderr == "error: x\n"


def test_child_results_come_from_json_not_from_log_text(inputs: dict[str, Path], tmp_path: Path) -> None:
    """Every command can write its result as JSON (what the loop reads); its printed text is free."""
    r = pytrim("evaluate", "--net", inputs["net"], "--weights", inputs["weights"], "--quiet", "--result",
               tmp_path / "e.json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "e.json").read_text())
    assert set(result) == {"top1", "top5", "images", "top1_stderr"} and result["images"] == 25
