"""`python -m pytrim <command> ...` (or `pytrim <command>`): every pytrim tool, without the
repository's tools/ folder. `python -m pytrim --help` lists the commands."""

from __future__ import annotations

import importlib
import sys

from pytrim.cli import run

# command -> (module in pytrim.cli, what it does)
COMMANDS = {
    "collect": ("collect", "APoZ statistics of a net on its TEST data"),
    "choose": ("choose", "the neurons to cut, from statistics"),
    "cut": ("cut", "cut the chosen neurons: new prototxts and caffemodel"),
    "verify": ("verify", "prove a cut against the original with the neurons silenced"),
    "evaluate": ("evaluate", "top-1/top-5 on the TEST data"),
    "train": ("train", "train or fine-tune with Caffe's solver"),
    "train-masked": ("train_masked", "retrain with pruned connections held at zero"),
    "score": ("score", "score neurons with a unit criterion"),
    "trim": ("trim", "the iterated Network Trimming loop from a schedule"),
    "compare": ("compare", "two caffemodels side by side"),
    "compare-criteria": ("compare_criteria", "pruning criteria compared on LeNet-5 and LeNet-300-100"),
    "compare-task": ("compare_task", "one task of compare-criteria (run by it in a child process)"),
    "relief": ("relief", "NN Relief iterated as its authors run it, on LeNet-300-100 and LeNet-5"),
    "overlap": ("overlap", "do two samples choose the same neurons?"),
    "bench-apoz": ("bench_apoz", "APoZ collection vs a bare forward pass"),
    "bench-scale": ("bench_scale", "benchmark: statistics and a sweep on 1 and 2 Ray workers"),
    "coverage": ("coverage", "benchmark: what pytrim can trim in the model-zoo nets (filler weights, full size)"),
    "vgg16": ("vgg16", "the paper's VGG-16 run, and its synthetic stand-in"),
    "synthetic": ("synthetic", "any net end to end on filler weights: coverage, time and memory per step"),
    "prepare-lenet": ("prepare_lenet", "LeNet's data as LMDB"),
    "prepare-imagenet": ("prepare_imagenet", "ImageNet as LMDB for VGG-16"),
    "zoo": ("zoo", "write a public model-zoo net (ResNet-50, GoogLeNet, MobileNet, ...) as prototxt"),
    "probe": ("probe", "build a net in Caffe and report its blob and parameter shapes"),
}


def usage() -> str:
    lines = ["usage: python -m pytrim <command> [options]   (<command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<18} {what}" for name, (_, what) in COMMANDS.items()]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    command = sys.argv[1]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(f"pytrim.cli.{COMMANDS[command][0]}")
    sys.argv = [f"pytrim {command}", *sys.argv[2:]]
    run(module.main)


if __name__ == "__main__":
    main()
