"""The command line's vocabulary: every option any command takes, each with one meaning.

One name per concept: `--finetune-iters` is always the solver iterations of a retraining,
`--images` always how many images are used (the first N), `--out` always what a command
writes (a file or a folder), `--feed` a deploy net's images and `--data-dir` a folder of
train/val/test LMDBs, per-layer lists are always LAYER=VALUE,LAYER=VALUE. docs/commands.md's
table is what this command prints (`python -m pytrim vocabulary`); tests/test_cli.py holds every
command's --help to this list.
"""

from __future__ import annotations

import argparse
from typing import Any

from pytrim.cli import COMMANDS, parser_of

VOCABULARY: dict[str, str] = {
    "--help": "this help",
    "--quiet": "no progress bars",
    "--result": "also write the command's result as JSON to this file (what other steps read)",
    # nets and files
    "--net": "a net prototxt: a train_val (it reads its TEST data itself) or a deploy net (with --feed)",
    "--deploy": "the deploy prototxt rewritten alongside --net",
    "--weights": "a caffemodel (V0/V1 files are upgraded first)",
    "--trimmed-net": "the second net compared with --net: the trimmed one (or any other)",
    "--trimmed-weights": "the caffemodel of --trimmed-net",
    "--solver": "a solver prototxt",
    "--allow-python-layers": "run the code of a net's Python layers (named, with where each module is found, first)",
    "--schedule": "a trimming schedule (TOML)",
    "--stats": "a statistics file (HDF5) written by collect",
    "--selection": "a selection file (JSON) written by choose",
    "--recipe": "a cut's recipe.json, replayed by verify",
    "--masks": "an .npz of layer -> boolean keep mask",
    "--spec": "a sweep task's spec.json (internal)",
    "--out": "what the command writes: a file, or a folder (empty or the same command's own)",
    "--plots": "a folder for PNG figures",
    "--workdir": "a folder for a training run's solver copy, snapshots and log",
    # images
    "--images": "how many images are used: the first N (sweeps and samples: a seeded random N)",
    "--seed": "the seed of random draws (a sweep: one or more, comma-separated)",
    "--feed": "a deploy net's images: an LMDB of Datum records, or an image list ('path label' lines)",
    "--feed-root": "the folder an image list's paths are relative to",
    "--mean": "per-channel mean (BGR) subtracted from fed images, e.g. 104,117,123",
    "--scale": "factor applied to fed images after the mean",
    "--resize": "fed images resized first: H,W, or N for a short side of N",
    "--data-dir": "a folder with train_lmdb, val_lmdb and test_lmdb",
    "--other": "an LMDB a second sample of images is drawn from",
    # choosing neurons
    "--layers": "comma-separated layer names (trim: or auto, the paper's plan)",
    "--criterion": "a unit pruning criterion: apoz, mean_activation, l1, taylor, random",
    "--criteria": "comma-separated pruning criteria",
    "--k": "rule mean_std: remove scores above mean + k * std",
    "--ratio": "LAYER=R,...: remove this fraction of each layer",
    "--count": "LAYER=N,...: remove this many neurons of each layer",
    "--widths": "LAYER=N,...: a width plan, keep exactly N neurons",
    "--min-keep": "LAYER=N,...: keep at least N neurons",
    "--round-to": "round each layer's kept width up to a multiple of N",
    # cutting and proving
    "--allow-inexact": "also cut through layers that mix channels (LRN across channels), their deviation bounded",
    "--fold-mean": "fold removed channels' mean outputs into their consumers' biases (means from --stats)",
    "--keep-means": "collect also keeps the mean outputs consumers read (for --fold-mean)",
    "--verify": "prove the cut after making it",
    "--onnx": "also write the trimmed net as ONNX, verified against Caffe in ONNX Runtime",
    "--exact-tol": "verification: relative tolerance of every exact blob",
    "--inexact-tol": "verification: bound on the blobs downstream of an inexact cut",
    "--passes": "verification: forward passes compared",
    # training
    "--iters": "solver iterations of a training run (default: the solver's max_iter)",
    "--finetune-iters": "solver iterations of each retraining after a cut (fine-tuning)",
    "--finetune-lr": "base_lr of each retraining",
    "--scratch-iters": "solver iterations of the from-scratch ablation",
    "--init": "train from saved initial weights (OUT.init.caffemodel)",
    "--no-eval": "no evaluation after training",
    "--select-every": "score the validation split every N iterations while retraining; keep the best",
    # the loop
    "--iterations": "trimming iterations",
    "--tolerance": "points of the metric the result may lose against the baseline",
    "--metric": "the TEST output blob decisions read (default: accuracy)",
    "--lower-is-better": "--metric: lower values are better (a loss)",
    "--no-scratch": "no from-scratch ablation",
    "--restart": "start the run over (only in a folder pytrim made)",
    # scale-out
    "--retime": "trim: time every try again in every runtime (the machine was busy); every other step is reused",
    "--jobs": "steps run side by side at most (default: the cores; 1: serially)",
    "--workers": "split the work among N local Ray workers",
    "--ray-address": "run on a running Ray cluster (HOST:PORT of its head)",
    # experiments and benchmarks
    "--nets": "comma-separated names of built-in nets",
    "--unit-points": "fractions of each group cut by the unit criteria",
    "--magnitude-points": "final thresholds (x the weight std) of magnitude pruning",
    "--relief-points": "NN Relief's alpha of the InnerProduct layers",
    "--rounds": "pruning rounds of an iterative criterion",
    "--alpha-conv": "NN Relief's alpha of the convolutions",
    "--alpha-fc": "NN Relief's alpha of the InnerProduct layers",
    "--rewind": "rewind surviving weights to their initial values every round",
    "--fraction": "the fraction of every trimmable group cut",
    "--batch": "batch size (speed: one or more, comma-separated)",
    "--repeats": "timed samples per net (0: no timing)",
    "--threads": "BLAS threads while timing (default: every core)",
    "--by-layer": "also time every layer alone: the time per layer type, MAC layers against the others",
    "--sweep-args": "bench-scale: the sweep-criteria options timed",
    "--no-sweep": "bench-scale: time only the statistics",
    "--synthetic": "vgg16: random weights and generated images instead of the real files",
    "--overlap": "vgg16: first compare the neurons chosen on validation and on training images",
    "--json": "print JSON instead of a table",
    "--torch-python": "bench-peers: the Python of the environment with torch and Torch-Pruning (.venv-peers)",
    # data preparation
    "--dataset": "prepare-lenet: fashion-mnist or mnist",
    "--from": "prepare-lenet: a folder of the four IDX files",
    "--download": "prepare-lenet: download MNIST (needs the internet)",
    "--url": "prepare-lenet: the base URL of --download",
    "--download-dir": "prepare-lenet: where --download keeps the IDX files",
    "--train-images": "prepare-lenet: keep only the first N training images",
    "--val-images": "prepare-lenet: the last N training images held out as the validation split",
    "--test-images": "prepare-lenet: keep only the first N test images",
    "--force": "prepare-lenet: write the databases even when they are up to date",
    "--val": "ImageNet validation images: an LMDB, or a folder of JPEGs",
    "--val-labels": "labels of a JPEG folder ('path label' lines)",
    "--train": "ImageNet training images: an LMDB, or a folder of JPEGs",
    "--train-labels": "labels of a JPEG folder ('path label' lines)",
    # nets as prototxt
    "--list": "zoo: list the nets",
    "--kind": "zoo: train_val, deploy or both",
    "--train-batch": "zoo: TRAIN batch of a train_val",
    "--test-batch": "zoo: TEST batch of a train_val",
    "--train-source": "zoo: TRAIN LMDB of a train_val",
    "--test-source": "zoo: TEST LMDB of a train_val",
    "--aux": "zoo: GoogLeNet's auxiliary classifiers",
    "--check": "record: only check that the documentation's tables are the record's",
    "--phase": "probe: TEST or TRAIN",
}


def table(users: dict[str, list[str]]) -> str:
    """The vocabulary as docs/commands.md's markdown table: option, meaning, the commands that take it."""
    lines = ["| option | meaning | commands |", "|---|---|---|"]
    for option, meaning in VOCABULARY.items():
        commands = users.get(option, [])
        shown = "every command" if len(commands) > 10 else ", ".join(commands)
        lines.append(f"| `{option}` | {meaning} | {shown} |")
    return "\n".join(lines)


def option_users() -> dict[str, list[str]]:
    """Every option any command takes -> the commands that take it (from their parsers)."""
    users: dict[str, list[str]] = {}
    for name in COMMANDS:
        for action in parser_of(name)._actions:
            for option in action.option_strings:
                if option.startswith("--"):
                    users.setdefault(option, []).append(name)
    return users


def arguments(p: argparse.ArgumentParser) -> None:
    """No options of its own."""


def execute(args: argparse.Namespace) -> dict[str, Any]:
    users = option_users()
    print(table(users))
    return {"options": users}
