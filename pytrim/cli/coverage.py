"""Benchmark: which Convolution/InnerProduct layers of the public model-zoo nets pytrim can
trim, each net end to end on random weights (python -m pytrim synthetic) at full size; the
nets of pytrim's own that the channel graph joins (JOINED: squeeze-and-excitation, dual paths,
Concats added to residual sums) also at a small input (name@32).

For each net the generator's deploy prototxt (pytrim/caffeio/zoo.py) goes through collect,
choose (a fraction of every trimmable group), cut, verify and two solver iterations, with
--allow-inexact (AlexNet, CaffeNet and GoogLeNet normalise across channels). Writes
<out>/<net>/report.json per net and <out>/coverage.json: per net the coverage, whether the
exact cuts verify within 1e-5, the inexact deviation, the cut's seconds and peak memory
against the caffemodel, and the cut net's MACs and forward-time ratios.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytrim.caffeio.env import pinned_machine
from pytrim.caffeio.zoo import write
from pytrim.cli.options import net_names
from pytrim.core.errors import BadInput
from pytrim.core.files import write_json
from pytrim.experiments.synthetic import Options, run, summary

OUTPUTS = {"out": "folder"}
JOINED = ("se_resnet50", "dpn", "inception_resnet")  # pytrim's own: excitations, dual paths, Concats joined to sums
SMALL = 32  # the side of the small-input copies (name@32): spatial 1x1 in the last stages
NETS = ("resnet50", "googlenet", "squeezenet11", "mobilenet", "mobilenet_v2", "vgg16", "alexnet", "caffenet",
        *JOINED, *(f"{name}@{SMALL}" for name in JOINED))  # fmt: skip


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nets", default=",".join(NETS), help=f"comma-separated (default: {','.join(NETS)})")
    p.add_argument("--fraction", type=float, default=0.25, help="fraction of each group cut (0.25)")
    p.add_argument("--repeats", type=int, default=3, help="forward-time samples per net (default 3; 0: no timing)")
    p.add_argument("--out", type=Path, default=Path("runs/synthetic"))


def execute(args: argparse.Namespace) -> dict[str, Any]:
    chosen = net_names(args.nets, NETS)
    if not 0 < args.fraction < 1:
        raise BadInput(f"--fraction {args.fraction}: a fraction in (0, 1)")
    results = {}
    for name in chosen:
        folder = args.out / name.replace("@", "-")
        net, _, side = name.partition("@")
        (deploy,) = write(net, folder / "prototxt", ["deploy"], size=int(side) if side else None)
        print(f"{name}: synthetic run in {folder}", flush=True)
        opts = Options(args.fraction, images=4, batch=2, allow_inexact=True, repeats=args.repeats)
        entry = results[name] = summary(run(deploy, folder, opts, log=lambda _: None)) | {"machine": pinned_machine()}
        print(f"  {entry['trimmable']}/{entry['conv_ip_layers']} Convolution/InnerProduct layers trimmable; exact cuts "
              f"verify {entry['verify_exact_max_relative_diff']:.2g}; cut {entry['cut_seconds']:.1f} s, "
              f"{entry['cut_rss_over_caffemodel']:.2f}x the caffemodel's size", flush=True)  # fmt: skip
        write_json(args.out / "coverage.json", results)
    return results
