"""NN Relief iterated as its authors run it, on a LeNet (make lenet-relief): per round, the
algorithm's new masks (pytrim.criteria.relief), the pruned weights evaluated, optionally
rewound to their initial values, then retrained with the masks held at zero by Caffe's Adam
(lr 1e-3, weight decay 5e-4, lr / 10 halfway), keeping the checkpoint of the best validation
accuracy. The report keeps what earlier runs with the same settings and weights finished.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.caffemodel import count_params
from pytrim.caffeio.lmdb import sample_lmdb
from pytrim.caffeio.proto import layers_in_phase, read_net, write_solver
from pytrim.core.errors import BadInput
from pytrim.core.files import sha256_file, shipped, write_json
from pytrim.criteria.relief import masked_count, relief_round
from pytrim.retrain.masked import Masks, load_masks, masked_weights, train_masked
from pytrim.retrain.solver import train_baseline
from pytrim.stats.evaluate import top1_on

NETS = {  # name -> (folder under prototxt/, baseline caffemodel): the LeNets of the sweep and of NN Relief
    "lenet5": ("lenet", "models/lenet/lenet.caffemodel"),
    "lenet300": ("lenet300", "models/lenet300/lenet300.caffemodel"),
}


@dataclass
class ReliefSettings:
    """A NN Relief run (the authors' LeNet settings, but for the retraining budget)."""

    alpha_conv: float = 0.9
    alpha_fc: float = 0.95
    rounds: int = 12  # LeNet-5 passes 12x at round 11, LeNet-300-100 at round 9 (README)
    sample: int = 1000  # random training images the scores are computed on (fixed for all rounds)
    seed: int = 0
    retrain_iters: int = 1500  # per round (the authors: 60 epochs)
    select_every: int = 500  # keep the best validation accuracy among these checkpoints
    rewind: bool = False  # the authors rewind the LeNets to their initial weights every round
    base_lr: float = 1e-3
    weight_decay: float = 5e-4


@dataclass
class ReliefNet:
    """A net to prune: train_val, trained weights, their initial weights (for rewinding), the
    LMDBs (training images to sample, validation for choosing checkpoints, test to report)."""

    name: str
    net: Any
    weights: Any
    init: Any
    train_db: Any
    val_db: Any
    test_db: Any
    sample: Any = None  # the LMDB of sampled training images (made by `run_relief`)


def adam_solver(net: Any, out: Any, settings: ReliefSettings) -> Any:
    """The authors' retraining: Adam, lr 1e-3, weight decay 5e-4, lr / 10 halfway."""
    half = max(1, settings.retrain_iters // 2)
    write_solver(None, out, net=str(net), type="Adam", base_lr=settings.base_lr, momentum=0.9, momentum2=0.999,
                 delta=1e-8, weight_decay=settings.weight_decay, lr_policy="multistep", stepvalue=[half], gamma=0.1,
                 max_iter=settings.retrain_iters, random_seed=settings.seed + 1701, display=0)  # fmt: skip
    return out


def accuracy(net: Any, weights: Any, source: Any, tmp: Any) -> float:
    """Top-1 of `weights` on an LMDB (the net's TEST data re-pointed to it)."""
    return top1_on(net, weights, source, tmp / "eval.prototxt")


def one_round(spec: ReliefNet, settings: ReliefSettings, masks: Masks | None, weights: Any, folder: Any) -> tuple:
    """Prune (new masks), evaluate, optionally rewind, retrain with the masks; returns the
    masks, the retrained weights and the round's record."""
    folder.mkdir(parents=True, exist_ok=True)
    alphas = (settings.alpha_conv, settings.alpha_fc)
    masks = relief_round(spec.net, weights, masks, spec.sample, alphas, folder)
    pruned = masked_weights(weights, masks, folder / "pruned.caffemodel")
    start = masked_weights(spec.init, masks, folder / "rewound.caffemodel") if settings.rewind else pruned
    solver = adam_solver(spec.net, folder / "solver.prototxt", settings)
    retrained = folder / "retrained.caffemodel"
    trained = train_masked(solver, start, masks, retrained, spec.net, settings.retrain_iters, False,
                           settings.select_every, spec.val_db)  # fmt: skip
    record = {
        "nonzero": masked_count(masks),
        "top1_before": accuracy(spec.net, pruned, spec.test_db, folder),
        "top1": accuracy(spec.net, retrained, spec.test_db, folder),
        "val_top1": trained["val_top1"],
        "best_iteration": trained["best_iteration"],
    }
    return masks, retrained, record


def run_relief(spec: ReliefNet, settings: ReliefSettings, out: Any, log: Any = print) -> dict[str, Any]:
    """Every round of NN Relief on one net; the report (also saved as <out>/report.json)
    keeps what earlier runs finished with the same settings and weights."""
    out.mkdir(parents=True, exist_ok=True)
    if settings.rewind and not spec.init.is_file():
        raise BadInput(f"--rewind needs the initial weights of {spec.weights}: {spec.init} is missing")
    spec.sample = sample_lmdb(spec.train_db, out / "sample_lmdb", settings.sample, settings.seed)
    layers = [x.name for x in layers_in_phase(read_net(spec.net), "TEST") if x.type in ("Convolution", "InnerProduct")]
    base = {"params": count_params(spec.weights, layers), "top1": accuracy(spec.net, spec.weights, spec.test_db, out)}
    key = {"settings": asdict(settings), "weights": sha256_file(spec.weights)}
    report = {"net": spec.name, "baseline": base, "settings": asdict(settings), "rounds": []}
    done = json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else {}
    masks, weights = None, spec.weights
    for number in range(1, settings.rounds + 1):
        folder = out / f"round-{number:02d}"
        kept = done.get("key") == key and len(done.get("rounds", [])) >= number and (folder / "masks.npz").is_file()
        if kept:
            masks, weights, record = (
                load_masks(folder / "masks.npz"),
                folder / "retrained.caffemodel",
                done["rounds"][number - 1],
            )
        else:
            masks, weights, record = one_round(spec, settings, masks, weights, folder)
            np.savez(folder / "masks.npz", **masks)
            record |= {"round": number, "compression": base["params"] / record["nonzero"]}
        report["rounds"].append(record)
        write_json(out / "report.json", report | {"key": key})
        log(f"{spec.name} round {number}: {record['nonzero']:,} parameters kept ({record['compression']:.2f}x), "
            f"top-1 {record['top1_before']:.2%} after pruning, {record['top1']:.2%} after retraining")  # fmt: skip
    return report


def lenet(name: str, data: Path) -> ReliefNet:
    """A LeNet of NETS with its data folder (train/val/test LMDBs), its baseline trained first
    when missing."""
    folder, weights = NETS[name]
    net = shipped(f"prototxt/{folder}/train_val.prototxt")
    trained = train_baseline(shipped(f"prototxt/{folder}/solver.prototxt"), Path(weights), net)
    return ReliefNet(name, net, trained, trained.with_suffix(".init.caffemodel"), data / "train_lmdb",
                     data / "val_lmdb", data / "test_lmdb")  # fmt: skip
