#!/usr/bin/env python3
"""The Caffe side of the torch environment's tests (`make test-peers`), run with pytrim's venv
(.venv/bin/python tools/peers/tests/caffe_side.py OUT): what the torch side is checked against.

Into OUT: toy LMDBs (28x28, and 13x13 for the edge cases) as image arrays; the benchmark nets
(LeNet, resnet_fm, mobilenet_fm, squeezenet_fm) and a net of edge cases (padded AVE pooling
on odd sizes, a MAX pooling whose last window Caffe drops, grouped and depthwise
convolutions, BatchNorm in and out of place, Eltwise SUM with coefficients, Concat, leaky
ReLU, Dropout, global pooling, two classifiers summed), each trained 150 Caffe iterations
(BatchNorm's scale factor settled) and written as a twin spec with Caffe's scores on the test
images; 5 iterations of Caffe's fine-tuning solver from each benchmark net (the weights the
twin's own fine-tuning must reach) with their budget; Caffe's learning rate at every
iteration under each policy (read from its log). OUT/index.json lists it all.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import net_text, toy_db, write_net  # noqa: E402

from pytrim.caffeio import benchnets  # noqa: E402
from pytrim.caffeio.proto import read_net, write_solver, write_text  # noqa: E402
from pytrim.caffeio.zoo import L, P, net_spec  # noqa: E402
from pytrim.core.files import write_json  # noqa: E402
from pytrim.experiments import peers_files as files  # noqa: E402
from pytrim.retrain.solver import init_weights, train  # noqa: E402

TRAIN_BATCH = 8
GAUSS = {"weight_filler": {"type": "gaussian", "std": 0.2}, "bias_filler": {"type": "gaussian", "std": 0.1}}
POLICIES = {"fixed": {}, "step": {"gamma": 0.5, "stepsize": 3}, "exp": {"gamma": 0.9},
            "inv": {"gamma": 0.1, "power": 0.75}, "multistep": {"gamma": 0.5, "stepvalue": [2, 5, 9]},
            "poly": {"power": 2.0}, "sigmoid": {"gamma": 0.5, "stepsize": 6}}  # fmt: skip
LR_RE = re.compile(r"Iteration (\d+), lr = (\S+)")


def unit(n: Any, name: str, bottom: Any, out: int, in_place: bool, **conv: Any) -> Any:
    n[name] = L.Convolution(bottom, num_output=out, **GAUSS, **conv)
    n[f"{name}/bn"] = L.BatchNorm(n[name], in_place=in_place)
    n[f"{name}/scale"] = L.Scale(n[f"{name}/bn"], in_place=True, bias_term=True)
    return n[f"{name}/scale"]


def edges(n: Any, data: Any) -> Any:
    """13x13 input: the pooling, grouping, sum and concat cases the twin must get right."""
    x = unit(n, "c1", data, 8, True, kernel_size=3, stride=2, pad=1)  # 7x7
    n.r1 = L.ReLU(x, in_place=True, negative_slope=0.1)
    n.p1 = L.Pooling(n.r1, pool=P.Pooling.AVE, kernel_size=3, stride=2, pad=1)  # 7 -> 4, padded windows
    n.c2 = L.Convolution(n.p1, num_output=8, kernel_size=3, pad=1, group=2, **GAUSS)
    n.c3 = L.Convolution(n.p1, num_output=8, kernel_size=1, **GAUSS)
    n.sum = L.Eltwise(n.c2, n.c3, coeff=[0.5, 2.0])
    n.r2 = L.ReLU(n.sum, in_place=True)
    n.p2 = L.Pooling(n.r2, pool=P.Pooling.MAX, kernel_size=2, stride=3, pad=1)  # 4 -> 2: a last window dropped
    dw = unit(n, "dw", n.p2, 8, False, kernel_size=3, pad=1, group=8)
    n.c4 = L.Convolution(n.p2, num_output=4, kernel_size=1, **GAUSS)
    n.cat = L.Concat(dw, n.c4)
    n.drop = L.Dropout(n.cat, in_place=True, dropout_ratio=0.3)
    n.ip1 = L.InnerProduct(n.drop, num_output=10, **GAUSS)
    n.gp = L.Pooling(n.cat, pool=P.Pooling.MAX, global_pooling=True)
    n.ip2 = L.InnerProduct(n.gp, num_output=10, **GAUSS)
    n.scores = L.Eltwise(n.ip1, n.ip2)
    return n.scores


def edges_net(data: Path, out: Path) -> Path:
    lmdbs = (data / "small_train_lmdb", data / "small_test_lmdb", TRAIN_BATCH)
    return write_net(out, net_text(edges, [TRAIN_BATCH, 1, 13, 13], lmdbs, "edges"))


def bench_net(name: str, data: Path, out: Path) -> Path:
    """A benchmark net's train_val on the toy data, its TRAIN batch small."""
    net = read_net(ROOT / f"prototxt/{name}/train_val.prototxt") if name == "lenet" else benchnets.build(
        name, "train_val", str(data))  # fmt: skip
    for layer in net.layer:
        if layer.type == "Data":
            train = layer.include[0].phase == 0
            layer.data_param.source = str(data / ("train_lmdb" if train else "test_lmdb"))
            layer.data_param.batch_size = TRAIN_BATCH if train else 100
    return write_text(net, out)


def trained(net: Path, folder: Path, iterations: int = 150) -> Path:
    """The net's fillers trained `iterations` Caffe iterations (fixed rate, momentum 0.9)."""
    solver = folder / "train_solver.prototxt"
    write_solver(None, solver, net=str(net), base_lr=0.01, momentum=0.9, weight_decay=0.0005, lr_policy="fixed",
                 max_iter=iterations, snapshot=0, solver_mode="CPU", random_seed=7, display=0)  # fmt: skip
    init = init_weights(solver, folder / "init.caffemodel", net)
    return train(solver, folder / "trained.caffemodel", init, folder / "train", progress=False).caffemodel


def finetuned(name: str, net: Path, weights: Path, folder: Path) -> dict[str, Any]:
    """5 iterations of the net's fine-tuning solver (as pytrim's loop sets it) from `weights`."""
    lr = {"lenet": 0.001}.get(name, 0.01)
    solver = ROOT / f"prototxt/{name}/finetune_solver.prototxt"
    out = train(solver, folder / "tuned.caffemodel", weights, folder / "tune", 5, net, False, base_lr=lr)
    files.write_twin(net, out.caffemodel, folder / "tuned")
    return files.budget(solver, net, 5, lr)


def rates(data: Path, folder: Path) -> list[dict[str, Any]]:
    """Caffe's learning rate at iterations 0..11 under each policy, from its log."""
    n = net_spec().NetSpec()
    n.data, n.label = L.Data(source=str(data / "train_lmdb"), batch_size=4, backend=P.Data.LMDB, ntop=2)
    n.loss = L.SoftmaxWithLoss(L.InnerProduct(n.data, num_output=10, **GAUSS), n.label)
    folder.mkdir(parents=True, exist_ok=True)
    net = write_net(folder / "rates.prototxt", str(n.to_proto()))
    found = []
    for policy, fields in POLICIES.items():
        solver = folder / f"{policy}.prototxt"
        write_solver(None, solver, net=str(net), base_lr=0.1, momentum=0.9, lr_policy=policy, max_iter=12,
                     display=1, snapshot=0, solver_mode="CPU", **fields)  # fmt: skip
        done = train(solver, folder / f"{policy}.caffemodel", None, folder / policy, progress=False)
        lrs = {int(m.group(1)): float(m.group(2)) for m in LR_RE.finditer(done.log.read_text())}
        budget = {"base_lr": 0.1, "lr_policy": policy, "gamma": 0.0, "power": 0.0, "stepsize": 0, "stepvalue": [],
                  "max_iter": 12} | fields  # fmt: skip
        found.append({"budget": budget, "lr": [lrs[i] for i in sorted(lrs)]})
    return found


def main(out: Path) -> None:
    data = out / "data"
    for name, count, seed, side in (("train", 256, 0, 28), ("test", 100, 1, 28), ("small_train", 256, 2, 13),
                                    ("small_test", 100, 3, 13)):  # fmt: skip
        files.write_images(toy_db(data / f"{name}_lmdb", count, seed, side), data / f"{name}.npz")
    index: dict[str, Any] = {"data": str(data), "nets": {}, "rates": rates(data, out / "rates")}
    for name in ("lenet", "resnet_fm", "mobilenet_fm", "squeezenet_fm", "edges"):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        net = edges_net(data, folder / "train_val.prototxt") if name == "edges" else bench_net(
            name, data, folder / "train_val.prototxt")  # fmt: skip
        weights = trained(net, folder)
        files.write_twin(net, weights, folder / "twin")
        files.write_caffe_scores(net, weights, folder / "caffe.npz")
        entry = {"twin": str(folder / "twin"), "caffe": str(folder / "caffe.npz"),
                 "test": str(data / ("small_test.npz" if name == "edges" else "test.npz"))}  # fmt: skip
        if name != "edges":  # Dropout draws Caffe's random masks: no fine-tuning comparison there
            entry |= {"tuned": str(folder / "tuned"), "budget": finetuned(name, net, weights, folder)}
        index["nets"][name] = entry
    write_json(out / "index.json", index)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
