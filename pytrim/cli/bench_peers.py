"""Benchmark: pytrim and Torch-Pruning on the same nets, the same data, the same budget
(runs/bench/peers.json and peers.md).

Per net (LeNet, resnet_fm, mobilenet_fm, squeezenet_fm): pytrim's loop from the net's
schedule, then Torch-Pruning 1.6 on a PyTorch twin of the same baseline (checked against
Caffe's scores within 1e-4) with its importances (group L2 magnitude, Taylor, BatchNorm
scale where the net has BatchNorm, random), pruned step by step to the MACs pytrim's
iterations reached and one step further, each step fine-tuned with pytrim's budget as
Caffe's solver runs it. Test top-1 paired with the baseline, wall times, ONNX Runtime
latency ratios (one thread, batch 1 and 8). The torch side runs in its own environment
(`make .venv-peers`; --torch-python). Files and resumable steps in <out's folder>/peers/.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytrim.cli.options import names, net_names, numbers, positive
from pytrim.core.errors import BadInput
from pytrim.core.files import write_atomic, write_json
from pytrim.experiments.bench_peers import CRITERIA, NETS, Bench, bench_peers, check_nets
from pytrim.experiments.peers_report import markdown

OUTPUTS = {"out": "file"}
RESUMABLE = True


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nets", default=",".join(NETS), help=f"comma-separated (default: {','.join(NETS)})")
    p.add_argument("--criteria", default=",".join(CRITERIA), help=f"Torch-Pruning's importances (default: "
                   f"{','.join(CRITERIA)}; bn_scale only where the net has BatchNorm)")  # fmt: skip
    p.add_argument("--seed", default="0,1,2", help="seeds of the Torch-Pruning runs (0: the training images in "
                   "Caffe's order; others: a seeded shuffle), comma-separated (default 0,1,2)")  # fmt: skip
    p.add_argument("--finetune-iters", type=positive, help="solver iterations of each retraining (default: the "
                   "schedules'); pytrim's loop and Torch-Pruning alike")  # fmt: skip
    p.add_argument("--iterations", type=positive, help="pytrim's trimming iterations (default: the schedules')")
    p.add_argument("--jobs", type=positive, default=2, help="runs side by side at most (default 2: the cores)")
    p.add_argument("--repeats", type=positive, default=21, help="timed rounds of the ONNX Runtime latency (default 21)")
    p.add_argument(
        "--torch-python",
        type=Path,
        default=Path(".venv-peers/bin/python"),
        help="the Python of the environment with torch and Torch-Pruning (default .venv-peers/bin/python)",
    )
    p.add_argument("--out", type=Path, default=Path("runs/bench/peers.json"), help="the result (peers.md beside it)")


def check(args: argparse.Namespace) -> None:
    args.nets = net_names(args.nets, tuple(NETS))
    args.criteria = names(args.criteria) or []
    unknown = [c for c in args.criteria if c not in CRITERIA]
    if unknown or not args.criteria:
        raise BadInput(f"--criteria: unknown {', '.join(unknown) or 'none given'} (one of {', '.join(CRITERIA)})")
    args.seed = [int(s) for s in numbers(args.seed, int, "--seed")]
    if not args.torch_python.is_file():
        raise BadInput(f"--torch-python {args.torch_python} not found: `make .venv-peers` makes it")
    check_nets(args.nets)


def outputs(args: argparse.Namespace) -> tuple[dict, dict]:
    return {"--out's table": args.out.with_suffix(".md")}, {}


def execute(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(args.nets, args.seed, args.criteria, args.torch_python, args.out.parent / "peers",
                  args.finetune_iters, args.iterations, args.jobs, args.repeats, not args.quiet)  # fmt: skip
    result = bench_peers(bench)
    write_json(args.out, result)
    write_atomic(args.out.with_suffix(".md"), markdown(result))
    print(markdown(result))
    print(f"written: {args.out}, {args.out.with_suffix('.md')}")
    return result
