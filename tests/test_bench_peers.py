"""bench-peers, pytrim's side (no torch here: the torch side's tests are tools/peers/tests, run by
`make test-peers`): the twin spec holds Caffe's settings, multipliers and weights, the arrays
and Caffe's scores are what Caffe reads and computes, the budget is the solver's, the MACs
targets follow pytrim's iterations, and the verdicts follow the paired differences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, filler_weights, net_text, pytrim, toy_db, toy_images, write_net

from pytrim.caffeio.caffemodel import Caffemodel, count_params
from pytrim.core.errors import BadInput, UnsupportedTopology
from pytrim.experiments import peers_files as files
from pytrim.experiments.bench_peers import targets
from pytrim.experiments.peers_report import against, verdicts
from pytrim.stats.cost import size
from pytrim.stats.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]


def body(n, data):
    """Conv (rectangular padding) -> BatchNorm + Scale -> ReLU -> padded AVE pooling, a sum with
    coefficients of a grouped and a 1x1 convolution, a Concat, global pooling, InnerProduct."""
    from caffe import layers as L
    from caffe import params as P

    fill = {"weight_filler": {"type": "gaussian", "std": 0.1}, "bias_filler": {"type": "gaussian", "std": 0.1}}
    n.c1 = L.Convolution(data, num_output=6, kernel_size=3, pad_h=1, pad_w=0, param=[{"lr_mult": 1},
                         {"lr_mult": 2, "decay_mult": 0}], **fill)  # fmt: skip
    n.bn = L.BatchNorm(n.c1, in_place=True, batch_norm_param={"eps": 1e-3})
    n.sc = L.Scale(n.bn, in_place=True, bias_term=True)
    n.r1 = L.ReLU(n.sc, in_place=True)
    n.p1 = L.Pooling(n.r1, pool=P.Pooling.AVE, kernel_size=3, stride=2, pad=1)
    n.g = L.Convolution(n.p1, num_output=6, kernel_size=1, group=2, **fill)
    n.one = L.Convolution(n.p1, num_output=6, kernel_size=1, **fill)
    n.sum = L.Eltwise(n.g, n.one, coeff=[0.5, 2.0])
    n.cat = L.Concat(n.sum, n.p1)
    n.gp = L.Pooling(n.cat, pool=P.Pooling.MAX, global_pooling=True)
    n.ip = L.InnerProduct(n.gp, num_output=10, **fill)
    return n.ip


@pytest.fixture
def net(caffe, tmp_path: Path) -> dict[str, Path]:
    db = toy_db(tmp_path / "db", 30)
    train_val = write_net(tmp_path / "train_val.prototxt", net_text(body, [10, 1, 28, 28], (db, db, 10)))
    return {"net": train_val, "weights": filler_weights(caffe, train_val, tmp_path / "w.caffemodel"), "db": db}


def test_the_twin_spec_holds_caffes_settings_multipliers_and_weights(net: dict[str, Path], tmp_path: Path) -> None:
    spec = files.write_twin(net["net"], net["weights"], tmp_path / "twin")
    assert json.loads((tmp_path / "twin.json").read_text()) == spec
    layers = {entry["name"]: entry for entry in spec["layers"]}
    assert list(layers) == ["c1", "bn", "sc", "r1", "p1", "g", "one", "sum", "cat", "gp", "ip"]  # no data, loss
    assert layers["c1"]["settings"] == {"num_output": 6, "kernel": [3, 3], "stride": [1, 1], "pad": [1, 0],
                                             "dilation": [1, 1], "group": 1, "bias": True}  # fmt: skip
    assert layers["c1"]["multipliers"] == [[1.0, 1.0], [2.0, 0.0]] and layers["g"]["multipliers"] == [[1, 1]] * 2
    assert layers["bn"]["settings"] == {"eps": pytest.approx(1e-3), "moving_average_fraction": pytest.approx(0.999)}
    assert layers["bn"]["multipliers"] == [[0.0, 0.0]] * 3 and layers["g"]["settings"]["group"] == 2
    assert layers["p1"]["settings"] == {"pool": "AVE", "global": False, "kernel": [3, 3], "stride": [2, 2],
                                        "pad": [1, 1]}  # fmt: skip
    assert layers["sum"]["settings"] == {"operation": "SUM", "coeff": [0.5, 2.0]} and layers["gp"]["settings"]["global"]
    assert spec["ignored"] == ["ip"] and spec["output"] == "ip" and spec["input"]["shape"] == [1, 28, 28]
    assert spec["input"]["scale"] == pytest.approx(1 / 256) and spec["blobs"]["p1"] == [6, 15, 14]  # rounded up
    cost = size(net["net"], net["weights"])
    assert spec["macs"] == cost["macs"] and spec["params"] == count_params(net["weights"])
    with np.load(tmp_path / "twin.npz") as arrays, Caffemodel(net["weights"]) as model:
        for j, entry in enumerate(spec["layers"]):
            stored = [arrays[f"L{j}_{i}"] for i in range(entry["blobs"])]
            expected = model.arrays(entry["name"]) if entry["blobs"] else []
            assert len(stored) == len(expected)
            assert all(np.array_equal(a, b) for a, b in zip(stored, expected, strict=True))


def test_a_layer_the_twin_has_no_translation_for_is_named(caffe, tmp_path: Path) -> None:
    def lrn_body(n, data):
        from caffe import layers as L

        n.c1 = L.Convolution(data, num_output=4, kernel_size=3, weight_filler={"type": "xavier"})
        n.norm = L.LRN(n.c1, local_size=3)
        n.ip = L.InnerProduct(n.norm, num_output=10, weight_filler={"type": "xavier"})
        return n.ip

    db = toy_db(tmp_path / "db", 10)
    train_val = write_net(tmp_path / "lrn.prototxt", net_text(lrn_body, [5, 1, 28, 28], (db, db, 5)))
    with pytest.raises(UnsupportedTopology, match="no translation of LRN \\(layer 'norm'\\)"):
        files.write_twin(train_val, filler_weights(caffe, train_val, tmp_path / "w.caffemodel"), tmp_path / "twin")


def test_images_and_caffes_scores_are_what_caffe_reads_and_computes(net: dict[str, Path], tmp_path: Path) -> None:
    found = files.write_images(net["db"], tmp_path / "images.npz")
    images, labels = toy_images(30)
    with np.load(tmp_path / "images.npz") as stored:
        assert np.array_equal(stored["images"][:, 0], images) and np.array_equal(stored["labels"], labels)
    assert found["images"] == 30 and found["shape"] == [1, 28, 28]
    scored = files.write_caffe_scores(net["net"], net["weights"], tmp_path / "caffe.npz")
    with np.load(tmp_path / "caffe.npz") as stored:
        assert stored["scores"].shape == (30, 10) and np.array_equal(stored["labels"], labels)
        assert np.unique(stored["scores"], axis=0).shape[0] > 1  # one row per image, not one batch repeated
    assert scored["top1"] == pytest.approx(evaluate(net["net"], net["weights"], progress=False).top1)


def test_the_budget_is_the_solvers_and_the_train_batch(tmp_path: Path) -> None:
    solver, train_val = ROOT / "prototxt/lenet/finetune_solver.prototxt", ROOT / "prototxt/lenet/train_val.prototxt"
    found = files.budget(solver, train_val, 2000, 0.001)
    assert found["batch"] == 64 and found["images_seen"] == 128000 and found["max_iter"] == 2000
    assert found["lr_policy"] == "inv" and found["base_lr"] == 0.001 and found["momentum"] == pytest.approx(0.9)
    assert found["weight_decay"] == pytest.approx(5e-4) and found["gamma"] == pytest.approx(1e-4)
    assert files.budget(solver, train_val, 10, None)["base_lr"] == pytest.approx(0.006)  # the solver's own rate
    adam = write_net(tmp_path / "adam.prototxt", solver.read_text() + 'type: "Adam"\n')
    with pytest.raises(BadInput, match="plain SGD"):
        files.budget(adam, train_val, 10, None)


def test_torch_prunings_targets_follow_pytrims_iterations() -> None:
    def loop(ratios: list[float], final: int) -> dict:
        return {"iterations": [{"cost": {"macs_ratio": r}} for r in ratios], "final": {"iteration": final}}

    assert targets(loop([1.2, 1.5, 1.9], 2), 1000) == ([1000 / 1.2, 1000 / 1.5, 1000 / 1.9], 2)
    found, matched = targets(loop([1.2, 1.5], 2), 1000)  # every iteration accepted: the last ratio once more
    assert matched == 2 and found[:2] == [1000 / 1.2, 1000 / 1.5] and found[2] == pytest.approx(1000 / 1.875)
    assert targets(loop([1.3], 0), 1000) == ([1000 / 1.3], 0)  # nothing accepted: only the step further


def test_verdicts_follow_the_paired_difference() -> None:
    rng = np.random.default_rng(0)
    theirs = (rng.random(10000) < 0.9).astype(float)
    better = theirs.copy()
    better[np.flatnonzero(theirs == 0)[:100]] = 1  # pytrim right on 100 more images: +1 point
    close = theirs.copy()
    close[np.flatnonzero(theirs == 0)[:3]] = 1
    rows = [{"net": "n", "importance": "l2", "target": "matched", "correct": theirs, "macs_ratio": 2.0}]
    ahead, level = verdicts([{"macs_ratio": 2.0}], rows, better), verdicts([{"macs_ratio": 2.0}], rows, close)
    assert ahead[0]["verdict"] == "ahead" and ahead[0]["pytrim_minus_torch_pruning"] == pytest.approx(0.01)
    assert level[0]["verdict"] == "level" and ahead[0]["stderr"] == pytest.approx(against(theirs, better)[1])
    assert verdicts([{"macs_ratio": 2.0}], rows, 1 - better)[0]["verdict"] == "behind"


def test_bad_options_are_one_line_and_write_nothing(tmp_path: Path) -> None:
    out = tmp_path / "peers.json"
    for args, needle in ((["--criteria", "l3"], "--criteria: unknown l3"),
                         (["--torch-python", tmp_path / "none"], "make .venv-peers"),
                         (["--seed", "0,x"], "--seed")):  # fmt: skip
        done = pytrim("bench-peers", "--nets", "lenet", "--out", out, *args)
        assert_one_line_error(done, needle)
        assert not out.exists() and not (tmp_path / "peers").exists()


def test_the_rows_pair_every_method_with_the_baseline_and_average_the_seeds(tmp_path: Path) -> None:
    """A run as bench-peers records it (pytrim's two iterations, two Torch-Pruning seeds of one
    importance): the rows, the seeds' average, the verdict and the table drawn from them."""
    from pytrim.experiments.peers_report import net_rows, table
    from pytrim.stats.evaluate import Scores

    rng = np.random.default_rng(1)
    base = (rng.random(2000) < 0.9).astype(float)

    def saved(name: str, values: np.ndarray, key: str = "values") -> str:
        path = tmp_path / name
        np.savez(path, **{key: values, "weights": np.ones(values.size)})
        return str(path)

    flip = lambda v, n: np.where(np.arange(v.size) < n, 1 - v, v)  # noqa: E731
    budget = {"iterations": 10, "images_seen": 640, "batch": 64, "lr_policy": "inv", "base_lr": 0.001}
    results = []
    for seed in (0, 1):
        folder = tmp_path / f"l2-seed{seed}"
        folder.mkdir()
        steps = []
        for number in (1, 2):
            correct = flip(base, 40 * number + seed)
            np.savez(folder / f"test-{number:02d}.npz", correct=correct)
            steps.append({"step": number, "macs_ratio": 1.5 + number / 10, "params_ratio": 1.4,
                          "test_top1": correct.mean(), "seconds_so_far": 10.0 * number + seed,
                          "cpu_seconds_so_far": 5.0 * number,
                          "widths": {"c": 8 - number}, "kept": "finetuned", "budget": budget})  # fmt: skip
        results.append({"importance": "l2", "seed": seed, "folder": str(folder), "steps": steps})
    iterations = [{"cost": {"macs_ratio": 1.5}, "compression": 2.0, "accepted": True, "widths": "20-30"},
                  {"cost": {"macs_ratio": 1.8}, "compression": 2.6, "accepted": False, "widths": "20-25"}]  # fmt: skip
    loop = {"final": {"iteration": 1}, "iterations": iterations, "seconds": 99.0, "cpu_seconds": 9.0}
    net = {"net": "toy", "loop": loop,
           "state_baseline": {"test_scores": saved("base.npz", base)},
           "state_iterations": [{"test_scores": saved(f"it{i}.npz", flip(base, 10 * i))} for i in (1, 2)],
           "plan": {"matched": 1, "budgets": [budget, budget]}, "results": results,
           "latency": {"pytrim": {"ratio_batch1": 1.2, "ratio_batch8": 1.3},
                       "l2-1": {"ratio_batch1": 1.1}}}  # fmt: skip
    rows, judged = net_rows(net)
    assert [(r["method"], r["step"]) for r in rows] == [("pytrim", 1), ("pytrim", 2), ("torch-pruning", 1),
                                                          ("torch-pruning", 2)]  # fmt: skip
    matched = rows[2]
    seeds = np.mean([flip(base, 40), flip(base, 41)], axis=0)
    assert matched["test_top1"] == pytest.approx(seeds.mean()) and matched["seeds"] == [0, 1]
    assert matched["test_difference"] == pytest.approx(seeds.mean() - base.mean())
    assert matched["wall_seconds"] == pytest.approx(10.5) and matched["budget"]["images_seen"] == 640
    assert rows[3]["budget"]["images_seen"] == 1280 and rows[1]["target"] == "one further (not accepted)"
    assert matched["latency"] == {"ratio_batch1": 1.1} and rows[0]["latency"]["ratio_batch8"] == 1.3
    pytrim_result = Scores.load(net["state_iterations"][0]["test_scores"]).values
    (verdict,) = judged
    assert verdict["pytrim_minus_torch_pruning"] == pytest.approx(pytrim_result.mean() - seeds.mean())
    twin = {"max_abs_diff": 1e-5, "max_rel_diff": 1e-6}
    nets = [{"net": "toy", "twin": twin, "budgets_equal": True, "baseline_top1": 0.9, "pytrim_seconds": 99.0}]
    text = table({"rows": rows, "verdicts": judged, "nets": nets})
    assert text.count("\n| toy |") == 6 and "| toy | l2 |" in text and "1 min 39 s" in text


def test_the_loops_time_adds_up_over_the_runs_that_built_its_folder(tmp_path: Path) -> None:
    from pytrim.experiments.bench_peers import loop_time

    path = tmp_path / "pytrim-time.json"
    first = loop_time(path, {"seconds": 100.0, "cpu_seconds": 40.0}, resumed=False)
    again = loop_time(path, {"seconds": 3.0, "cpu_seconds": 1.0}, resumed=True)  # reused: a few seconds more
    assert first["seconds"] == 100.0 and again["seconds"] == 103.0 and again["cpu_seconds"] == 41.0
    assert again["this_run_seconds"] == 3.0 and again["resumed"]
    assert loop_time(path, {"seconds": 7.0, "cpu_seconds": 2.0}, resumed=False)["seconds"] == 7.0  # a new folder
