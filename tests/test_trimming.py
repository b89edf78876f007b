"""Network Trimming steps on tiny real Caffe nets: collect, choose, cut, verify."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    ROOT,
    assert_one_line_error,
    caffe_test_fractions,
    files_under,
    net_text,
    pytrim,
    read_model,
    small_body,
    toy_db,
    write_model,
    write_net,
)

from pytrim.caffeio.lmdb import write_datums as write_lmdb
from pytrim.caffeio.proto import read_net
from pytrim.core.errors import UnsupportedTopology
from pytrim.graph.build import net_graph
from pytrim.graph.queries import group_of
from pytrim.stats.collect import LANE_LIMIT, ZeroCounter, collect
from pytrim.stats.statsfile import load_stats, save_stats
from pytrim.stats.statsnet import write_stats_net
from pytrim.surgery.choose import Rule, Selection, choose
from pytrim.surgery.cut import cut
from pytrim.surgery.verify import verify


def fc_body(n, data):
    from caffe import layers as L

    n.ip1 = L.InnerProduct(data, num_output=4)
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.relu1, num_output=2)
    return n.ip2


def test_apoz_equals_numpy_count_with_chosen_weights(caffe, tmp_path: Path) -> None:
    """ip1 = ReLU(W x + b) with chosen W, b and inputs: APoZ is known by hand."""
    pixels = np.array([[10, 200], [0, 0], [255, 30], [90, 90], [40, 220], [7, 7], [128, 0]], dtype=np.uint8)
    db = write_lmdb(pixels.reshape(7, 1, 2), np.zeros(7, np.uint8), tmp_path / "db", progress=False)
    proto = write_net(tmp_path / "fc.prototxt", net_text(fc_body, [3, 1, 1, 2], (db, db, 3)))
    net = caffe.Net(str(proto), caffe.TEST)
    w = np.array([[1, -1], [-1, 1], [0, 0], [1, 1]], np.float32)
    b = np.array([0, 0, -1, 0.05], np.float32)
    net.params["ip1"][0].data[...] = w
    net.params["ip1"][1].data[...] = b
    net.save(str(tmp_path / "fc.caffemodel"))
    x = pixels.astype(np.float32) / 256
    stats = collect(proto, tmp_path / "fc.caffemodel", layers=["ip1"], progress=False)
    layer = stats.layers["ip1"]
    assert layer.images == 7 and layer.positions == 1 and layer.relu  # partial last batch counted once
    np.testing.assert_array_equal(layer.zeros, (x @ w.T + b <= 0).sum(axis=0))
    assert layer.apoz[2] == 1.0 and layer.apoz[3] == 0.0  # neuron 2 is always zero, neuron 3 never


def test_apoz_equals_brute_force_count(caffe, small_net: dict[str, Path]) -> None:
    stats = collect(small_net["net"], small_net["weights"], images=23, progress=False)
    assert list(stats.layers) == ["conv1", "conv2", "ip1"]
    assert {name: [p.blob for p in layer.points] for name, layer in stats.layers.items()} == {
        "conv1": ["conv1"],
        "conv2": ["relu2"],
        "ip1": ["ip1"],
    }
    # Brute force: keep every activation of 23 images in memory, count with numpy.
    net = caffe.Net(str(small_net["net"]), str(small_net["weights"]), caffe.TEST)
    kept = {"conv1": [], "relu2": [], "ip1": []}
    for _ in range(3):
        net.forward()
        for blob, batches in kept.items():
            batches.append(net.blobs[blob].data.copy())
    for layer, blob in (("conv1", "conv1"), ("conv2", "relu2"), ("ip1", "ip1")):
        acts = np.concatenate(kept[blob])[:23]
        acts = acts.reshape(23, acts.shape[1], -1)
        np.testing.assert_array_equal(stats.layers[layer].zeros, (acts == 0).sum(axis=(0, 2)))
        assert stats.layers[layer].positions == acts.shape[2]
        assert 0 < stats.layers[layer].mean < 1
    path = save_stats(stats, small_net["dir"] / "stats.h5")
    again = load_stats(path)
    assert again.weights_sha256 == stats.weights_sha256 and list(again.layers) == list(stats.layers)
    for name in stats.layers:
        np.testing.assert_array_equal(again.layers[name].apoz, stats.layers[name].apoz)


def test_counts_of_batches_larger_than_a_lane_holds(caffe, tmp_path: Path) -> None:
    """Byte lanes count at most LANE_LIMIT images: larger batches, and many batches, empty
    them into the totals in time (exact against numpy over 1,217 images)."""
    from caffe import layers as L

    n = caffe.NetSpec()
    n.data = L.Input(shape={"dim": [600, 3, 5, 7]})  # 105 positions per image: not a multiple of 8
    n.out = L.ReLU(n.data)
    net = caffe.Net(str(write_net(tmp_path / "relu.prototxt", str(n.to_proto()))), caffe.TEST)
    counter, expected, rng = ZeroCounter(net, ["out"]), np.zeros(3, np.int64), np.random.default_rng(5)
    for take in (600, 600, 17):
        net.blobs["data"].data[...] = rng.standard_normal((600, 3, 5, 7)) * (rng.random((600, 3, 1, 1)) < 0.8)
        net.forward()
        counter.update(take)
        expected += (net.blobs["out"].data[:take] == 0).sum(axis=(0, 2, 3))
    assert LANE_LIMIT < 600 and counter.images == 1217
    np.testing.assert_array_equal(counter.zeros["out"], expected)
    np.testing.assert_array_equal(counter.zeros["out"], expected)  # reading the counts changes nothing


def no_relu_body(n, data):
    """LeNet's pattern: conv -> pool without a ReLU, then fc + ReLU."""
    from caffe import layers as L
    from caffe import params as P

    n.conv1 = L.Convolution(data, num_output=5, kernel_size=5, weight_filler={"type": "gaussian", "std": 0.3})
    n.pool1 = L.Pooling(n.conv1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.ip1 = L.InnerProduct(n.pool1, num_output=7, weight_filler={"type": "gaussian", "std": 0.1})
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.relu1, num_output=10)
    return n.ip2


def test_layer_without_relu_counts_outputs_at_most_zero(caffe, tmp_path: Path) -> None:
    db = toy_db(tmp_path / "db", 12)
    proto = write_net(tmp_path / "n.prototxt", net_text(no_relu_body, [6, 1, 28, 28], (db, db, 6)))
    caffe.set_random_seed(3)
    caffe.Net(str(proto), caffe.TEST).save(str(tmp_path / "w.caffemodel"))
    stats = collect(proto, tmp_path / "w.caffemodel", progress=False)
    assert stats.layers["conv1"].relu is False and stats.layers["ip1"].relu is True
    net = caffe.Net(str(proto), str(tmp_path / "w.caffemodel"), caffe.TEST)
    outputs = np.concatenate([net.forward() and net.blobs["conv1"].data.copy() for _ in range(2)])
    np.testing.assert_array_equal(stats.layers["conv1"].zeros, (outputs <= 0).sum(axis=(0, 2, 3)))
    assert (outputs < 0).any()  # negative outputs are counted as the zeros a ReLU would make


def test_statistics_net_counts_exactly_on_the_device(caffe, small_net: dict[str, Path]) -> None:
    """Threshold + global pooling inside Caffe give the same counts as counting on the host;
    `caffe test` on the same statistics net gives them within its printed precision."""
    host = collect(small_net["net"], small_net["weights"], images=20, progress=False, device_counting=False)
    device = collect(small_net["net"], small_net["weights"], images=20, progress=False, device_counting=True)
    for name in host.layers:
        np.testing.assert_array_equal(device.layers[name].zeros, host.layers[name].zeros)
        assert device.layers[name].positions == host.layers[name].positions
    blobs = {layer.points[0].blob: 4 if name != "ip1" else 2 for name, layer in host.layers.items()}
    stats_prototxt = write_stats_net(small_net["net"], blobs, small_net["dir"] / "stats.prototxt")
    fractions = caffe_test_fractions(stats_prototxt, small_net["weights"], 2, small_net["dir"] / "test.log")
    for layer in host.layers.values():
        per_slot = fractions[layer.points[0].blob].reshape(10, -1)  # batch 10: (image slot, channel), 2 batches
        np.testing.assert_allclose(1.0 - per_slot.mean(axis=0), layer.apoz, atol=1e-5)


def test_choose_mean_plus_k_std() -> None:
    scores = np.array([0.1, 0.2, 0.2, 0.3, 0.9, 0.95, 0.25, 0.15])
    threshold = scores.mean() + scores.std()
    chosen = choose("l", scores, Rule("mean_std", k=1.0))
    assert chosen.threshold == pytest.approx(threshold)
    assert chosen.remove.tolist() == [4, 5] and len(chosen.keep) == 6
    assert choose("l", scores, Rule("mean_std", k=0.0)).remove.tolist() == sorted(
        np.flatnonzero(scores > scores.mean())
    )
    # The minimum to keep caps the removal, dropping the highest scores first.
    assert choose("l", scores, Rule("mean_std", k=0.0, min_keep=6)).remove.tolist() == [4, 5]
    assert choose("l", scores, Rule("ratio", ratio=0.25)).remove.tolist() == [4, 5]
    assert choose("l", scores, Rule("count", count=3)).remove.tolist() == [3, 4, 5]


def test_choose_never_empties_a_layer() -> None:
    scores = np.ones(5)
    assert len(choose("l", scores, Rule("count", count=10)).keep) == 1
    assert len(choose("l", scores, Rule("count", count=10, min_keep=0)).keep) == 1
    assert len(choose("l", scores, Rule("ratio", ratio=0.99, min_keep=3)).keep) == 3
    assert len(choose("l", scores, Rule("mean_std")).keep) == 5  # no score is above mean + std
    with pytest.raises(ValueError):
        Rule("ratio", ratio=1.0)


def selection(layer: str, width: int, remove: list[int]) -> Selection:
    keep = np.setdiff1d(np.arange(width), remove)
    return Selection(layer, width, keep, np.array(remove, dtype=np.int64))


CASES = {
    "conv->conv": {"conv1": [0, 3]},
    "conv->pool->fc": {"conv2": [1, 2, 7]},
    "fc->fc": {"ip1": [0, 5, 6, 11]},
    "all at once": {"conv1": [5], "conv2": [0, 4], "ip1": [3, 9]},
}
WIDTHS = {"conv1": 6, "conv2": 8, "ip1": 12}


@pytest.mark.parametrize("case", list(CASES))
def test_cut_verifies_exact(caffe, small_net: dict[str, Path], case: str) -> None:
    chosen = {name: selection(name, WIDTHS[name], remove) for name, remove in CASES[case].items()}
    out = small_net["dir"] / "cut"
    result = cut(
        [small_net["net"], small_net["deploy"]],
        small_net["weights"],
        chosen,
        [out / "train_val.prototxt", out / "deploy.prototxt"],
        out / "trimmed.caffemodel",
    )
    assert result.widths_after == {n: WIDTHS[n] - len(r) for n, r in CASES[case].items()}
    # The parameter count equals the count of the trimmed net that Caffe builds.
    trimmed = caffe.Net(str(out / "train_val.prototxt"), str(out / "trimmed.caffemodel"), caffe.TEST)
    assert result.params_after == sum(b.data.size for bs in trimmed.params.values() for b in bs)
    assert result.params_after < result.params_before
    for net, trimmed_net in (
        (small_net["net"], out / "train_val.prototxt"),
        (small_net["deploy"], out / "deploy.prototxt"),
    ):
        check = verify(net, small_net["weights"], trimmed_net, out / "trimmed.caffemodel", chosen, batches=2)
        assert check.ok, (check.problems, check.max_relative)
        assert check.max_relative <= 1e-5
        assert {"ip2", "conv1"} <= {c.blob for c in check.checks}


@pytest.mark.parametrize("consumer", ["conv2", "ip1", "ip2"])
def test_verify_fails_on_a_wrong_consumer_slice(caffe, small_net: dict[str, Path], consumer: str) -> None:
    producer = {"conv2": "conv1", "ip1": "conv2", "ip2": "ip1"}[consumer]
    chosen = {producer: selection(producer, WIDTHS[producer], [1])}
    out = small_net["dir"] / "cut"
    cut([small_net["net"]], small_net["weights"], chosen, [out / "train_val.prototxt"], out / "trimmed.caffemodel")
    assert verify(
        small_net["net"], small_net["weights"], out / "train_val.prototxt", out / "trimmed.caffemodel", chosen
    ).ok
    # Shift the consumer's input channels by one: a wrong slice.
    model = read_model(out / "trimmed.caffemodel")
    layer = next(layer for layer in model.layer if layer.name == consumer)
    shape = tuple(layer.blobs[0].shape.dim)
    w = np.asarray(layer.blobs[0].data, np.float32).reshape(shape)
    w = np.roll(w.reshape(shape[0], WIDTHS[producer] - 1, -1), 1, axis=1).reshape(shape)
    del layer.blobs[0].data[:]
    layer.blobs[0].data.extend(w.ravel().tolist())
    write_model(model, out / "wrong.caffemodel")
    check = verify(small_net["net"], small_net["weights"], out / "train_val.prototxt", out / "wrong.caffemodel", chosen)
    assert not check.ok and check.max_relative > 1e-3


def test_classifier_is_refused(tmp_path: Path) -> None:
    db = toy_db(tmp_path / "db", 4)
    proto = write_net(tmp_path / "n.prototxt", net_text(small_body, [2, 1, 28, 28], (db, db, 2)))
    with pytest.raises(UnsupportedTopology, match="its outputs are the net's outputs"):
        group_of(net_graph(proto)[1], "ip2")


def collect_choose(small_net: dict[str, Path], out: Path, *choose_args: str) -> None:
    r = pytrim("collect", "--net", small_net["net"], "--weights", small_net["weights"], "--out", out / "stats.h5",
               "--plots", out / "plots", "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = pytrim("choose", "--stats", out / "stats.h5", "--out", out / "sel.json", *choose_args)
    assert r.returncode == 0, r.stderr


def test_cut_tool_with_verify(small_net: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    collect_choose(small_net, out, "--layers", "conv2,ip1", "--count", "conv2=3,ip1=5")
    assert (out / "plots/apoz_conv2.png").stat().st_size > 1000
    assert [e["kept"] for e in json.loads((out / "sel.json").read_text())["layers"]] == [5, 7]
    r = pytrim("cut", "--net", small_net["net"], "--deploy", small_net["deploy"], "--weights", small_net["weights"],
               "--selection", out / "sel.json", "--out", out / "cut", "--verify", "--result",
               out / "cut.json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "cut.json").read_text())["verify"]["ok"] is True
    r = pytrim("verify", "--net", small_net["deploy"], "--weights", small_net["weights"], "--trimmed-net",
               out / "cut/deploy.prototxt", "--trimmed-weights", out / "cut/trimmed.caffemodel", "--selection",
               out / "sel.json")  # fmt: skip
    assert r.returncode == 0 and "verify: OK" in r.stdout
    # A consumer slice that does not fit: verify fails with one error line naming the blob.
    wrong = read_model(out / "cut/trimmed.caffemodel")
    ip2 = next(layer for layer in wrong.layer if layer.name == "ip2")
    ip2.blobs[0].data[0] += 5.0
    write_model(wrong, out / "wrong.caffemodel")
    r = pytrim("verify", "--net", small_net["net"], "--weights", small_net["weights"], "--trimmed-net",
               out / "cut/train_val.prototxt", "--trimmed-weights", out / "wrong.caffemodel", "--selection",
               out / "sel.json", "--quiet")  # fmt: skip
    assert_one_line_error(r, "verification failed", "'ip2'")


def test_overlap_of_two_samples(small_net: dict[str, Path], tmp_path: Path) -> None:
    other = toy_db(tmp_path / "other", 25, seed=9)
    common = ("--net", small_net["net"], "--weights", small_net["weights"], "--k", "0", "--json")
    same = pytrim("overlap", *common, "--other", small_net["db"], "--layers", "conv2,ip1")
    assert same.returncode == 0, same.stderr
    for entry in json.loads(same.stdout).values():
        assert entry["jaccard"] == 1.0 and entry["common"] == entry["removed_a"] > 0
    result = pytrim("overlap", *common, "--other", other, "--layers", "ip1")
    got = json.loads(result.stdout)["ip1"]
    a = collect(small_net["net"], small_net["weights"], layers=["ip1"], progress=False).layers["ip1"].apoz
    test_net = read_net(small_net["net"])
    for layer in test_net.layer:
        if layer.type == "Data":
            layer.data_param.source = str(other)
    write_net(tmp_path / "other.prototxt", str(test_net))
    b = collect(tmp_path / "other.prototxt", small_net["weights"], layers=["ip1"], progress=False).layers["ip1"].apoz
    removed_a, removed_b = set(np.flatnonzero(a > a.mean())), set(np.flatnonzero(b > b.mean()))
    assert got["common"] == len(removed_a & removed_b)
    assert got["jaccard"] == pytest.approx(len(removed_a & removed_b) / len(removed_a | removed_b))


def test_compare_reports_flops_params_and_accuracy(small_net: dict[str, Path]) -> None:
    chosen = {"ip1": selection("ip1", 12, [0, 1, 2, 3])}
    out = small_net["dir"] / "cut"
    cut([small_net["net"]], small_net["weights"], chosen, [out / "train_val.prototxt"], out / "trimmed.caffemodel")
    result = pytrim("compare", "--net", small_net["net"], "--weights", small_net["weights"], "--trimmed-net",
                    out / "train_val.prototxt", "--trimmed-weights", out / "trimmed.caffemodel", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    a, b, reference, trimmed = found["a"], found["b"], found["cost"]["reference"], found["cost"]["nets"][0]
    # Multiply-adds: conv1 54 weights x 26x26, conv2 432 x 12x12, ip1 288x12, ip2 12x10.
    assert reference["macs"] == 54 * 676 + 432 * 144 + 288 * 12 + 12 * 10 == 102_288
    assert trimmed["macs"] == 54 * 676 + 432 * 144 + 288 * 8 + 8 * 10
    assert reference["params"] - trimmed["params"] == 4 * 288 + 4 + 4 * 10
    assert a["images"] == b["images"] == 25 and 0 <= b["top1"] <= 1
    for batch in ("1", "32"):
        timed = found["cost"]["timing"][batch]
        assert len(timed["seconds"]) == 2 and all(math.isfinite(t) and t > 0 for t in timed["seconds"])


def test_lenet_prototxts_parse_and_name_the_paper_layers() -> None:
    for folder in ("lenet", "lenet300"):
        net = read_net(ROOT / f"prototxt/{folder}/train_val.prototxt")
        assert any(layer.type == "Data" for layer in net.layer)
    assert files_under(ROOT / "prototxt/lenet") == sorted(
        ["deploy.prototxt", "finetune_solver.prototxt", "solver.prototxt", "train_val.prototxt", "trim.toml"]
    )
