"""The twins give Caffe's outputs, count as pytrim counts, and fine-tune as Caffe's solver does."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from finetune import finetune as tune
from finetune import rate, scores, stream
from peers import TOLERANCE, load_split
from twin import caffe_params, load_twin, macs, multipliers

NETS = ("lenet", "resnet_fm", "mobilenet_fm", "squeezenet_fm", "edges")
BENCH = NETS[:4]


@pytest.mark.parametrize("name", NETS)
def test_the_twin_gives_caffes_scores_and_pytrims_counts(fixtures: dict[str, Any], name: str) -> None:
    entry = fixtures["nets"][name]
    twin = load_twin(entry["twin"])
    with np.load(entry["caffe"]) as stored:
        caffe, labels = stored["scores"], stored["labels"]
    test = load_split(entry["test"])
    assert np.array_equal(test["labels"], labels)
    mine = scores(twin, test["images"])
    assert mine.shape == caffe.shape and np.abs(caffe).max() > 0.1
    assert np.abs(mine - caffe).max() <= TOLERANCE * np.abs(caffe).max()
    assert macs(twin, twin.spec["input"]["shape"]) == twin.spec["macs"]
    assert caffe_params(twin) == twin.spec["params"]


def test_the_edge_net_has_the_cases_it_is_meant_to_check(fixtures: dict[str, Any]) -> None:
    twin = load_twin(fixtures["nets"]["edges"]["twin"])
    blobs = twin.spec["blobs"]
    assert blobs["p1"][1:] == [4, 4] and blobs["p2"][1:] == [2, 2]  # padded AVE 7 -> 4, MAX 4 -> 2 (window dropped)
    kinds = {type(m).__name__ for m in twin.modules()}
    assert {"AvgPool2d", "MaxPool2d", "AdaptiveMaxPool2d", "Eltwise", "Concat", "Dropout", "LeakyReLU"} <= kinds
    convs = {name: m for name, m in twin.layers.items() if isinstance(m, torch.nn.Conv2d)}
    assert convs["c2"].groups == 2 and convs["dw"].groups == 8
    assert set(twin.spec["ignored"]) == {"ip1", "ip2"}  # the summed classifiers: pytrim trims neither


def test_caffes_learning_rate_policies(fixtures: dict[str, Any]) -> None:
    for entry in fixtures["rates"]:
        mine = [rate(entry["budget"], t) for t in range(len(entry["lr"]))]
        assert len(mine) == 12 and np.allclose(mine, entry["lr"], rtol=1e-5, atol=1e-9), entry["budget"]["lr_policy"]


@pytest.mark.parametrize("name", BENCH)
def test_fine_tuning_reaches_caffes_weights(fixtures: dict[str, Any], name: str) -> None:
    """5 iterations of the twin's Caffe SGD on the training images in Caffe's order reach the
    weights Caffe's own solver reached: the distance between the two is under half a percent
    of how far the weights moved (a rule without the per-blob multipliers, or with a fixed
    rate, misses by 2-34% on these nets), and BatchNorm's running statistics agree."""
    entry = fixtures["nets"][name]
    twin, caffe = load_twin(entry["twin"]), load_twin(entry["tuned"])
    train = load_split(f"{fixtures['data']}/train.npz")
    before = {k: v.clone() for k, v in twin.state_dict().items()}
    data = stream(train["images"], train["labels"], entry["budget"]["batch"], 0)
    tune(twin, multipliers(twin), data, entry["budget"])
    mine, theirs = twin.state_dict(), caffe.state_dict()
    missed = moved = 0.0
    for key, value in theirs.items():
        if key.endswith("num_batches_tracked"):
            continue
        if "running" in key:
            assert float((mine[key] - value).abs().max()) <= 1e-4 * float(value.abs().max()) + 1e-6, key
            continue
        missed += float(((mine[key] - value) ** 2).sum())
        moved += float(((value - before[key]) ** 2).sum())
    assert moved > 0 and (missed / moved) ** 0.5 < 5e-3


def test_the_update_rule_is_caffes_not_torchs() -> None:
    """Caffe's rule (v = m v + lr g) against torch.optim.SGD's (v = m v + g, w -= lr v): equal
    for a fixed rate, different once the rate changes."""
    from finetune import CaffeSGD

    results = []
    for lrs in ([0.1, 0.1], [0.1, 0.01]):
        w1, w2 = torch.nn.Parameter(torch.ones(1)), torch.nn.Parameter(torch.ones(1))
        ours, theirs = CaffeSGD([(w1, 1.0, 1.0)], 0.9, 0.0), torch.optim.SGD([w2], lr=lrs[0], momentum=0.9)
        for lr in lrs:
            for w in (w1, w2):
                w.grad = torch.ones(1)
            ours.step(lr)
            theirs.param_groups[0]["lr"] = lr
            theirs.step()
        results.append((w1.item(), w2.item()))
    assert results[0][0] == pytest.approx(results[0][1])
    assert results[1][0] == pytest.approx(1 - 0.1 - (0.9 * 0.1 + 0.01)) != pytest.approx(results[1][1])
