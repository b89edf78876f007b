"""Network Trimming steps on tiny real Caffe nets: collect, choose, cut, verify."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_prototxt

from pytrim.choose import Rule, Selection, choose
from pytrim.collect import collect, collect_targets, load_stats, save_stats
from pytrim.cut import cut
from pytrim.datasets import write_lmdb
from pytrim.graph import UnsupportedTopology, relu_outputs, trim_site
from pytrim.protoutil import read_model, read_net, write_model
from pytrim.statsnet import caffe_test_fractions, write_stats_net
from pytrim.verify import verify

ROOT = Path(__file__).resolve().parents[1]

DATA = """
layer {{ name: "d" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
        transform_param {{ scale: 0.00390625 }} data_param {{ source: "{train}" batch_size: {batch} backend: LMDB }} }}
layer {{ name: "d" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
        transform_param {{ scale: 0.00390625 }} data_param {{ source: "{test}" batch_size: {batch} backend: LMDB }} }}
"""
FILL = 'weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.2 }'
# conv1 -> conv2 (conv->conv), conv2 -> pool -> ip1 (conv->pool->fc), ip1 -> dropout -> ip2 (fc->fc).
BODY = f"""
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param {{ num_output: 6 kernel_size: 3 {FILL} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param {{ num_output: 8 kernel_size: 3 stride: 2 {FILL} }} }}
layer {{ name: "relu2" type: "ReLU" bottom: "conv2" top: "relu2" }}
layer {{ name: "pool2" type: "Pooling" bottom: "relu2" top: "pool2"
        pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1" inner_product_param {{ num_output: 12 {FILL} }} }}
layer {{ name: "relu3" type: "ReLU" bottom: "ip1" top: "ip1" }}
layer {{ name: "drop3" type: "Dropout" bottom: "ip1" top: "ip1" dropout_param {{ dropout_ratio: 0.5 }} }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param {{ num_output: 10 {FILL} }} }}
"""
LOSS = """
layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""
DEPLOY_INPUT = (
    'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 1 dim: 28 dim: 28 } } }'
)


def images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The toy task of test_train: the label is the band where the image is bright."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    imgs = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        imgs[i, 2 + 2 * label : 4 + 2 * label, :] = 250
    return imgs, labels


@pytest.fixture
def small_net(caffe, tmp_path: Path) -> dict[str, Path]:
    """train_val + deploy + random caffemodel of the small net, on 25 images, batch 10."""
    db = write_lmdb(*images(25), tmp_path / "db", progress=False)
    train_val = write_prototxt(
        tmp_path / "train_val.prototxt", 'name: "small"\n' + DATA.format(train=db, test=db, batch=10) + BODY + LOSS
    )
    deploy = write_prototxt(tmp_path / "deploy.prototxt", 'name: "small"\n' + DEPLOY_INPUT + BODY)
    caffe.set_random_seed(1701)  # the fillers: the same weights in every run
    net = caffe.Net(str(train_val), caffe.TEST)
    weights = tmp_path / "small.caffemodel"
    net.save(str(weights))
    return {"net": train_val, "deploy": deploy, "weights": weights, "db": db, "dir": tmp_path}


def test_apoz_equals_numpy_count_with_chosen_weights(caffe, tmp_path: Path) -> None:
    """ip1 = ReLU(W x + b) with chosen W, b and inputs: APoZ is known by hand."""
    pixels = np.array([[10, 200], [0, 0], [255, 30], [90, 90], [40, 220], [7, 7], [128, 0]], dtype=np.uint8)
    db = write_lmdb(pixels.reshape(7, 1, 2), np.zeros(7, np.uint8), tmp_path / "db", progress=False)
    proto = write_prototxt(
        tmp_path / "fc.prototxt",
        f"""
name: "fc"
{DATA.format(train=db, test=db, batch=3)}
layer {{ name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" inner_product_param {{ num_output: 4 }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param {{ num_output: 2 }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }}
""",
    )
    net = caffe.Net(str(proto), caffe.TEST)
    w = np.array([[1, -1], [-1, 1], [0, 0], [1, 1]], np.float32)
    b = np.array([0, 0, -1, 0.05], np.float32)
    net.params["ip1"][0].data[...] = w
    net.params["ip1"][1].data[...] = b
    net.save(str(tmp_path / "fc.caffemodel"))
    x = pixels.astype(np.float32) / 256
    expected = ((x @ w.T + b) <= 0).mean(axis=0)  # neuron 2 is always zero, neuron 3 never
    stats = collect(proto, tmp_path / "fc.caffemodel", layers=["ip1"], progress=False)
    layer = stats.layers["ip1"]
    assert layer.images == 7 and layer.positions == 1 and layer.relu  # partial last batch counted once
    np.testing.assert_array_equal(layer.zeros, (x @ w.T + b <= 0).sum(axis=0))
    np.testing.assert_allclose(layer.apoz, expected)
    assert layer.apoz[2] == 1.0 and layer.apoz[3] == 0.0


def test_apoz_equals_brute_force_count(caffe, small_net: dict[str, Path]) -> None:
    stats = collect(small_net["net"], small_net["weights"], limit=23, progress=False)
    assert list(stats.layers) == ["conv1", "conv2", "ip1"]
    assert relu_outputs(read_net(small_net["net"])) == {"conv1": "conv1", "conv2": "relu2", "ip1": "ip1"}
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
    # Saved and read back unchanged, with the fingerprint of the weights.
    path = save_stats(stats, small_net["dir"] / "stats.h5")
    again = load_stats(path)
    assert again.weights_sha256 == stats.weights_sha256 and list(again.layers) == list(stats.layers)
    for name in stats.layers:
        np.testing.assert_array_equal(again.layers[name].apoz, stats.layers[name].apoz)


def test_statistics_net_counts_exactly_on_the_device(caffe, small_net: dict[str, Path]) -> None:
    """Threshold + global pooling inside Caffe give the same counts as counting on the host;
    `caffe test` on the same statistics net gives them within its printed precision."""
    host = collect(small_net["net"], small_net["weights"], limit=20, progress=False, device_counting=False)
    device = collect(small_net["net"], small_net["weights"], limit=20, progress=False, device_counting=True)
    for name in host.layers:
        np.testing.assert_array_equal(device.layers[name].zeros, host.layers[name].zeros)
        assert device.layers[name].positions == host.layers[name].positions
    targets = collect_targets(read_net(small_net["net"]))
    stats_prototxt = write_stats_net(small_net["net"], targets, small_net["dir"] / "stats.prototxt")
    fractions = caffe_test_fractions(stats_prototxt, small_net["weights"], 2, small_net["dir"] / "test.log")
    for name, layer in host.layers.items():
        per_slot = fractions[name].reshape(10, -1)  # batch 10: (image slot, channel), averaged over 2 batches
        apoz = 1.0 - per_slot.mean(axis=0)
        np.testing.assert_allclose(apoz, layer.apoz, atol=1e-5)


def test_choose_mean_plus_k_std() -> None:
    scores = np.array([0.1, 0.2, 0.2, 0.3, 0.9, 0.95, 0.25, 0.15])
    threshold = scores.mean() + scores.std()
    chosen = choose("l", scores, Rule("apoz", k=1.0))
    assert chosen.threshold == pytest.approx(threshold)
    assert chosen.remove.tolist() == [4, 5] and len(chosen.keep) == 6
    assert choose("l", scores, Rule("apoz", k=0.0)).remove.tolist() == sorted(np.flatnonzero(scores > scores.mean()))
    # The minimum to keep caps the removal, dropping the highest scores first.
    capped = choose("l", scores, Rule("apoz", k=0.0, min_keep=6))
    assert capped.remove.tolist() == [4, 5]
    assert choose("l", scores, Rule("ratio", ratio=0.25)).remove.tolist() == [4, 5]
    assert choose("l", scores, Rule("count", count=3)).remove.tolist() == [3, 4, 5]


def test_choose_never_empties_a_layer() -> None:
    scores = np.ones(5)
    assert len(choose("l", scores, Rule("count", count=10)).keep) == 1
    assert len(choose("l", scores, Rule("count", count=10, min_keep=0)).keep) == 1
    assert len(choose("l", scores, Rule("ratio", ratio=0.99, min_keep=3)).keep) == 3
    assert len(choose("l", scores, Rule("apoz")).keep) == 5  # no score is above mean + std
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


@pytest.mark.parametrize("case", list(CASES))
def test_cut_verifies_exact(caffe, small_net: dict[str, Path], case: str) -> None:
    widths = {"conv1": 6, "conv2": 8, "ip1": 12}
    chosen = {name: selection(name, widths[name], remove) for name, remove in CASES[case].items()}
    out = small_net["dir"] / "cut"
    result = cut(
        [small_net["net"], small_net["deploy"]],
        small_net["weights"],
        chosen,
        [out / "train_val.prototxt", out / "deploy.prototxt"],
        out / "trimmed.caffemodel",
    )
    assert result.widths_after == {n: widths[n] - len(r) for n, r in CASES[case].items()}
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
    widths = {"conv1": 6, "conv2": 8, "ip1": 12}
    chosen = {producer: selection(producer, widths[producer], [1])}
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
    kept = widths[producer] - 1
    w = np.roll(w.reshape(shape[0], kept, -1), 1, axis=1).reshape(shape)
    del layer.blobs[0].data[:]
    layer.blobs[0].data.extend(w.ravel().tolist())
    write_model(model, out / "wrong.caffemodel")
    check = verify(small_net["net"], small_net["weights"], out / "train_val.prototxt", out / "wrong.caffemodel", chosen)
    assert not check.ok and check.max_relative > 1e-3


UNSUPPORTED = {
    "Eltwise": ('layer { name: "sum" type: "Eltwise" bottom: "conv1" bottom: "conv1" top: "sum" }', "sum"),
    "Concat": ('layer { name: "cat" type: "Concat" bottom: "conv1" bottom: "conv1" top: "cat" }', "cat"),
    "LRN": ('layer { name: "norm" type: "LRN" bottom: "conv1" top: "norm" }', "norm"),
    "BatchNorm": ('layer { name: "bn" type: "BatchNorm" bottom: "conv1" top: "conv1" }', "bn"),
}


@pytest.mark.parametrize("kind", list(UNSUPPORTED))
def test_unsupported_topology_is_refused_naming_the_layer(kind: str, tmp_path: Path) -> None:
    extra, name = UNSUPPORTED[kind]
    body = BODY.replace('layer { name: "relu1"', extra + '\nlayer { name: "relu1"')
    proto = write_prototxt(tmp_path / "net.prototxt", 'name: "x"\n' + DEPLOY_INPUT + body)
    with pytest.raises(UnsupportedTopology, match=rf"{kind} layer '{name}'"):
        trim_site(read_net(proto), "conv1")


def test_grouped_convolution_and_classifier_are_refused(tmp_path: Path) -> None:
    body = BODY.replace("num_output: 8 kernel_size: 3 stride: 2", "num_output: 8 kernel_size: 3 stride: 2 group: 2")
    proto = write_prototxt(tmp_path / "net.prototxt", 'name: "x"\n' + DEPLOY_INPUT + body + LOSS)
    with pytest.raises(UnsupportedTopology, match="'conv2': grouped convolution"):
        trim_site(read_net(proto), "conv1")
    with pytest.raises(UnsupportedTopology, match="its outputs are the net's outputs"):
        trim_site(read_net(proto), "ip2")


def tool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, check=False)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_tools_refuse_bad_input_and_write_nothing(small_net: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    # A caffemodel that does not match the prototxt: the differing layers and shapes named.
    lenet_text = (ROOT / "prototxt/lenet/train_val.prototxt").read_text()
    lenet_text = lenet_text.replace("data/lenet/test_lmdb", str(small_net["db"]))
    lenet = write_prototxt(
        tmp_path / "lenet.prototxt", lenet_text.replace("data/lenet/train_lmdb", str(small_net["db"]))
    )
    r = tool(
        str(ROOT / "tools/collect.py"),
        "--net",
        str(lenet),
        "--weights",
        str(small_net["weights"]),
        "--out",
        str(out / "s.h5"),
    )
    assert_one_line_error(r, "does not match", "conv1 blob 0: shape (20, 1, 5, 5)", "(6, 1, 3, 3)")
    # A missing data source.
    missing = write_prototxt(
        tmp_path / "missing.prototxt",
        small_net["net"].read_text().replace(str(small_net["db"]), str(tmp_path / "nowhere")),
    )
    r = tool(
        str(ROOT / "tools/collect.py"),
        "--net",
        str(missing),
        "--weights",
        str(small_net["weights"]),
        "--out",
        str(out / "s.h5"),
    )
    assert_one_line_error(r, "not an LMDB database")
    # Statistics measured on other weights.
    stats = out / "stats.h5"
    assert (
        tool(
            str(ROOT / "tools/collect.py"),
            "--net",
            str(small_net["net"]),
            "--weights",
            str(small_net["weights"]),
            "--out",
            str(stats),
            "--quiet",
        ).returncode
        == 0
    )
    other = tmp_path / "other.caffemodel"
    other.write_bytes(small_net["weights"].read_bytes() + b"\x00")
    r = tool(
        str(ROOT / "tools/choose.py"),
        "--stats",
        str(stats),
        "--layers",
        "conv2",
        "--weights",
        str(other),
        "--out",
        str(out / "sel.json"),
    )
    assert_one_line_error(r, "measured on")
    # An unsupported topology: refused before anything is written.
    assert (
        tool(
            str(ROOT / "tools/choose.py"), "--stats", str(stats), "--layers", "conv1", "--out", str(out / "sel.json")
        ).returncode
        == 0
    )
    body = BODY.replace('layer { name: "relu1"', UNSUPPORTED["LRN"][0] + '\nlayer { name: "relu1"')
    lrn = write_prototxt(
        tmp_path / "lrn.prototxt",
        'name: "small"\n' + DATA.format(train=small_net["db"], test=small_net["db"], batch=10) + body + LOSS,
    )
    r = tool(
        str(ROOT / "tools/cut.py"),
        "--net",
        str(lrn),
        "--weights",
        str(small_net["weights"]),
        "--selection",
        str(out / "sel.json"),
        "--out-dir",
        str(out / "cut"),
    )
    assert_one_line_error(r, "LRN layer 'norm'")
    assert sorted(p.name for p in out.iterdir()) == ["sel.json", "stats.h5"]


def test_cut_tool_with_verify(small_net: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert (
        tool(
            str(ROOT / "tools/collect.py"),
            "--net",
            str(small_net["net"]),
            "--weights",
            str(small_net["weights"]),
            "--out",
            str(out / "stats.h5"),
            "--plots",
            str(out),
            "--quiet",
        ).returncode
        == 0
    )
    assert (out / "apoz_conv2.png").stat().st_size > 1000
    r = tool(
        str(ROOT / "tools/choose.py"),
        "--stats",
        str(out / "stats.h5"),
        "--layers",
        "conv2,ip1",
        "--count",
        "conv2=3",
        "ip1=5",
        "--out",
        str(out / "sel.json"),
    )
    assert r.returncode == 0, r.stderr
    assert [e["kept"] for e in json.loads((out / "sel.json").read_text())["layers"]] == [5, 7]
    r = tool(
        str(ROOT / "tools/cut.py"),
        "--net",
        str(small_net["net"]),
        "--deploy",
        str(small_net["deploy"]),
        "--weights",
        str(small_net["weights"]),
        "--selection",
        str(out / "sel.json"),
        "--out-dir",
        str(out / "cut"),
        "--verify",
    )
    assert r.returncode == 0, r.stderr
    assert '"verify": true' in r.stdout
    r = tool(
        str(ROOT / "tools/verify.py"),
        "--net",
        str(small_net["deploy"]),
        "--weights",
        str(small_net["weights"]),
        "--trimmed-net",
        str(out / "cut/deploy.prototxt"),
        "--trimmed-weights",
        str(out / "cut/trimmed.caffemodel"),
        "--selection",
        str(out / "sel.json"),
    )
    assert r.returncode == 0 and "verify: OK" in r.stdout


def test_overlap_of_two_samples(small_net: dict[str, Path], tmp_path: Path) -> None:
    other = write_lmdb(*images(25, seed=9), tmp_path / "other", progress=False)
    same = tool(
        str(ROOT / "tools/overlap.py"),
        "--net",
        str(small_net["net"]),
        "--weights",
        str(small_net["weights"]),
        "--other",
        str(small_net["db"]),
        "--layers",
        "conv2,ip1",
        "--k",
        "0",
        "--json",
    )
    assert same.returncode == 0, same.stderr
    for entry in json.loads(same.stdout).values():
        assert entry["jaccard"] == 1.0 and entry["common"] == entry["removed_a"] > 0
    result = tool(
        str(ROOT / "tools/overlap.py"),
        "--net",
        str(small_net["net"]),
        "--weights",
        str(small_net["weights"]),
        "--other",
        str(other),
        "--layers",
        "ip1",
        "--k",
        "0",
        "--json",
    )
    got = json.loads(result.stdout)["ip1"]
    a = collect(small_net["net"], small_net["weights"], layers=["ip1"], progress=False).layers["ip1"].apoz
    net = small_net["net"].read_text().replace(f'source: "{small_net["db"]}"', f'source: "{other}"')
    other_net = write_prototxt(tmp_path / "other.prototxt", net)
    b = collect(other_net, small_net["weights"], layers=["ip1"], progress=False).layers["ip1"].apoz
    removed_a, removed_b = set(np.flatnonzero(a > a.mean())), set(np.flatnonzero(b > b.mean()))
    assert got["common"] == len(removed_a & removed_b)
    assert got["jaccard"] == pytest.approx(len(removed_a & removed_b) / len(removed_a | removed_b))


def test_compare_reports_flops_params_and_accuracy(small_net: dict[str, Path]) -> None:
    chosen = {"ip1": selection("ip1", 12, [0, 1, 2, 3])}
    out = small_net["dir"] / "cut"
    cut([small_net["net"]], small_net["weights"], chosen, [out / "train_val.prototxt"], out / "trimmed.caffemodel")
    result = tool(
        str(ROOT / "tools/compare.py"),
        "--net",
        str(small_net["net"]),
        "--weights",
        str(small_net["weights"]),
        "--net2",
        str(out / "train_val.prototxt"),
        "--weights2",
        str(out / "trimmed.caffemodel"),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    a, b = json.loads(result.stdout).values()
    # 2 FLOPs per multiply-add: conv1 54 weights x 26x26, conv2 432 x 12x12, ip1 288x12, ip2 12x10.
    assert a["flops"] == 2 * (54 * 676 + 432 * 144 + 288 * 12 + 12 * 10) == 204_576
    assert b["flops"] == 2 * (54 * 676 + 432 * 144 + 288 * 8 + 8 * 10)
    assert a["params"] - b["params"] == 4 * 288 + 4 + 4 * 10
    assert a["images"] == b["images"] == 25 and 0 <= b["top1"] <= 1 and a["ms_per_image"] > 0
