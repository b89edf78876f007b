"""What a net costs: multiply-adds counted from the net's own shapes (against hand counts on
tiny nets: grouped, depthwise, Deconvolution, InnerProduct after a flatten), kept widths
rounded for fast kernels, and the timing code (structure, not speed)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import pytrim, write_net

from pytrim.caffeio.netcheck import probe
from pytrim.caffeio.proto import read_net
from pytrim.experiments.bench_apoz import apoz_overhead
from pytrim.experiments.bench_speed import summary
from pytrim.graph.build import net_graph
from pytrim.graph.queries import trimmable
from pytrim.loop.report import cost_cells
from pytrim.stats.cost import UNSTEADY, compare_cost, cost_text, doubt, layer_macs, macs, spread
from pytrim.surgery.choose import Rule, choose
from pytrim.surgery.cut import cut

TINY = """layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 dim: 8 dim: 8 } } }
layer { name: "grouped" type: "Convolution" bottom: "data" top: "grouped"
  convolution_param { num_output: 6 kernel_size: 3 group: 2 } }
layer { name: "dw" type: "Convolution" bottom: "grouped" top: "dw"
  convolution_param { num_output: 6 kernel_size: 3 group: 6 pad: 1 stride: 2 } }
layer { name: "up" type: "Deconvolution" bottom: "dw" top: "up"
  convolution_param { num_output: 5 kernel_size: 2 stride: 2 } }
layer { name: "flat" type: "Flatten" bottom: "up" top: "flat" }
layer { name: "fc" type: "InnerProduct" bottom: "flat" top: "fc" inner_product_param { num_output: 7 } }
"""


def test_macs_of_tiny_nets_match_hand_counts(tmp_path: Path) -> None:
    net = write_net(tmp_path / "tiny.prototxt", TINY)
    found = layer_macs(read_net(net), probe(net))
    # grouped: 6 outputs of 6x6 positions, each reading 4/2 channels x 3x3 taps
    assert found["grouped"] == 6 * 36 * (2 * 9)
    # depthwise (group = channels): 6 outputs of 3x3 positions (stride 2, pad 1), 1 channel x 3x3 taps each
    assert found["dw"] == 6 * 9 * 9
    # Deconvolution: every input element (6 x 3x3) meets 5 outputs x 2x2 taps
    assert found["up"] == 6 * 9 * (5 * 4)
    # InnerProduct after Flatten: 7 outputs, each reading 5 x 6x6 = 180 inputs
    assert found["fc"] == 7 * 180
    assert macs(read_net(net), probe(net)) == sum(found.values())


def test_round_to_keeps_the_next_best_channels_by_score() -> None:
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4, 0.5, 0.05])  # higher: removed first
    plain = choose("l", scores, Rule("ratio", ratio=0.5))
    assert plain.remove.tolist() == [0, 2, 4, 6, 8] and len(plain.keep) == 5
    rounded = choose("l", scores, Rule("ratio", ratio=0.5, round_to=4))
    assert len(rounded.keep) == 8 and rounded.remove.tolist() == [0, 2]  # 8 kept: the two worst go
    assert len(choose("l", scores, Rule("ratio", ratio=0.5, round_to=16)).keep) == 10  # never beyond the width
    assert len(choose("l", scores, Rule("mean_std", k=0.0, min_keep=7, round_to=4)).keep) == 8  # min_keep, then up
    assert len(choose("l", scores, Rule("keep", keep=3, round_to=4)).keep) == 3  # a width plan is exact
    blocks = choose("g", np.arange(16.0), Rule("ratio", ratio=0.75, round_to=4), blocks=2)
    assert np.bincount(blocks.keep // 8).tolist() == [2, 2]  # each block keeps a multiple of 4 / 2


def test_the_timing_code_returns_positive_finite_medians(small_net: dict[str, Path], tmp_path: Path) -> None:
    """Every runtime (Caffe, OpenCV's DNN, ONNX Runtime) times the nets at every batch size and
    thread count (structure, not speed); Caffe at the most threads gives the flat keys."""
    found = compare_cost((small_net["deploy"], small_net["weights"]), [(small_net["deploy"], small_net["weights"])],
                         repeats=3, threads=2, batches=[1, 4])  # fmt: skip
    assert found["thread_counts"] == [1, 2] and found["threads"] == 2
    runtimes = found["timing"]["runtimes"]
    assert set(runtimes) == {"caffe", "opencv", "onnxruntime"}
    for by_threads in runtimes.values():
        assert set(by_threads) == {"threads1", "threads2"}
        for timed in (t for by_batch in by_threads.values() for t in by_batch.values()):
            assert len(timed["seconds"]) == 2 and all(math.isfinite(t) and t > 0 for t in timed["seconds"])
            assert all(math.isfinite(s) and s > 0 for s in timed["speedup"]) and timed["speedup"][0] == 1.0
    assert found["timing"]["4"] == runtimes["caffe"]["threads2"]["4"]
    entry = found["nets"][0]
    assert entry["macs_ratio"] == 1.0 and entry["params_ratio"] == 1.0 and entry["speedup_batch4"] > 0
    assert entry["spread_batch4"] == 0.0  # three rounds: too few to judge the spread
    assert entry["runtimes"]["onnxruntime"]["threads1"]["1"]["speedup"] > 0
    assert found["blas_core"] and found["cpu"]


def test_speed_by_layer_says_where_the_time_goes(small_net: dict[str, Path], tmp_path: Path) -> None:
    """`speed --by-layer` on a net and its cut (structure, not speed): every layer type of each
    net timed, the MAC layers apart from the others, and the command line prints it."""
    trimmed = cut_small(small_net, tmp_path)
    found = compare_cost((small_net["deploy"], small_net["weights"]), [trimmed], repeats=1, threads=1,
                         batches=[4], layers=True)  # fmt: skip
    split = found["timing"]["4"]["by_layer"]
    first, second = split["seconds_by_type"]
    assert {"Convolution", "InnerProduct", "ReLU", "Pooling"} <= set(first) and set(second) == set(first)
    assert all(math.isfinite(t) and t > 0 for t in [*first.values(), *second.values()])
    assert split["mac_layers_speedup"][0] == 1.0 and 0 < split["other_layers_share"] < 1
    entry = found["nets"][0]
    assert entry["mac_layers_speedup_batch4"] == split["mac_layers_speedup"][1] > 0
    nets = ("--net", small_net["deploy"], "--weights", small_net["weights"])
    printed = pytrim("speed", *nets, "--trimmed-net", trimmed[0], "--trimmed-weights", trimmed[1], "--batch", "2",
                     "--repeats", "1", "--by-layer")  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    assert "batch 2: MAC layers" in printed.stdout and "Convolution" in printed.stdout


def cut_small(small_net: dict[str, Path], folder: Path) -> tuple[Path, Path]:
    """The small net's deploy with half of conv2's channels cut."""
    _, graph = net_graph(small_net["deploy"])
    selection = choose("conv2", np.arange(trimmable(graph)["conv2"].width, dtype=float), Rule("ratio", ratio=0.5))
    net, weights = folder / "cut.prototxt", folder / "cut.caffemodel"
    cut([small_net["deploy"]], small_net["weights"], {"conv2": selection}, [net], weights)
    return net, weights


def test_the_statistics_overhead_is_timed_whole_in_pairs(small_net: dict[str, Path]) -> None:
    """bench-apoz on a tiny net (structure, not speed): every pair timed, the ratios from them."""
    found = apoz_overhead(small_net["net"], small_net["weights"], images=20, repeats=3)
    pairs = np.array(found["pairs"])
    assert pairs.shape == (3, 2) and (pairs > 0).all() and found["images"] == 20
    assert found["ratio"] == pytest.approx(float(np.median(pairs[:, 1] / pairs[:, 0])), rel=1e-3)
    assert found["ratio_of_fastest"] == pytest.approx(pairs[:, 1].min() / pairs[:, 0].min(), rel=1e-3)
    assert found["ratio_q1"] <= found["ratio"] <= found["ratio_q3"] and found["cpu"]


def test_a_timing_that_is_not_credible_is_marked_never_printed_as_a_fact() -> None:
    """A spread beyond UNSTEADY (a busy machine) or a speedup beyond IMPLAUSIBLE x the MACs ratio
    (found on a busy machine: a LeNet cut with 1.81x fewer MACs timed 15.39x faster) is marked."""
    assert spread([1.0, 1.0, 1.0, 1.0]) == 0.0 and spread([1.0, 1.0]) == 0.0
    assert spread([0.5, 1.0, 2.0, 40.0]) > UNSTEADY  # a busy machine: the rounds disagree
    assert doubt(1.5, 0.01, 2.0) is None and "disagree" in doubt(1.5, 3.0, 2.0)
    assert "beyond 1.5x the MACs ratio 1.81x" in doubt(15.39, 0.0, 1.81)
    steady = {"macs_ratio": 2.0, "speedup_batch1": 1.5, "spread_batch1": 0.01, "speedup_batch32": 1.4}
    busy = steady | {"speedup_batch32": 60.5, "spread_batch32": 3.0}
    implausible = {"macs_ratio": 1.81, "speedup_batch1": 15.39, "spread_batch1": 0.0,
                   "runtimes": {"onnxruntime": {"threads1": {"1": {"speedup": 11.41, "spread": 0.0,
                                                                   "doubt": doubt(11.41, 0.0, 1.81)}}}}}  # fmt: skip
    assert cost_cells(steady)[:2] == ["2.00x", "1.50x / 1.40x"]
    assert cost_cells(busy)[:2] == ["2.00x", "1.50x / 60.50x?"]
    assert cost_cells(implausible) == ["1.81x", "15.39x?", "", "11.41x?"]
    text = cost_text(implausible)
    assert "ONNX Runtime on 1 thread: 11.41x (not credible: 11.41x is beyond 1.5x the MACs ratio 1.81x" in text


def test_what_rounding_buys_is_judged_against_the_noise() -> None:
    """bench-speed's summary: rounding pays only when its median gain, over the cases where
    it changed the widths, beats the spread of cases timed twice with the same widths."""

    def row(net: str, round_to: int, params: float, e1: float, e8: float) -> dict:
        return {"net": net, "fraction": 0.5, "round_to": round_to, "params_ratio": params,
                "efficiency_batch1": e1, "efficiency_batch8": e8}  # fmt: skip

    same = [row("a", 1, 2.0, 0.80, 0.80), row("a", 8, 2.0, 0.85, 0.78)]  # noise: 0.05 and 0.02
    changed = [row("b", 1, 3.0, 0.70, 0.70), row("b", 8, 2.9, 0.80, 0.74)]  # gains: 0.10 and 0.04
    found = summary(same + changed)["rounding_8"]
    assert found["noise_batch1"] == pytest.approx(0.05) and found["median_gain_batch1"] == pytest.approx(0.10)
    assert found["better"] is True
    small = [row("b", 1, 3.0, 0.70, 0.70), row("b", 8, 2.9, 0.72, 0.71)]  # gains below the noise
    assert summary(same + small)["rounding_8"]["better"] is False
    assert summary(same + changed)["round_to_1"]["min_efficiency_batch1"] == pytest.approx(0.70)
