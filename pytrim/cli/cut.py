"""Cut the selected neurons out of a net: new train_val/deploy prototxts and caffemodel.

Only num_output (and a depthwise convolution's group, a Slice's points) changes in the
prototxts; every consumer of a trimmed layer loses the matching inputs. Unsupported
topology is refused before anything is written, and the outputs appear together or not at
all, with recipe.json (the cut as data). The result gives parameters, MACs, caffemodel bytes
and forward-time ratios of the trimmed net to the original in Caffe, OpenCV's DNN and ONNX
Runtime (--repeats 0: no timing). With --verify the cut is proven against the original with the
removed neurons silenced; with --onnx the trimmed net is also written as trimmed.onnx, proven
equal to Caffe in ONNX Runtime (pytrim export).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytrim.caffeio.upgrade import current_format
from pytrim.cli.options import add_fold, fold_of
from pytrim.core.errors import VerifyFailed
from pytrim.export.save import save_onnx
from pytrim.stats.cost import cost_of_cut, cost_text
from pytrim.surgery.choose import load_selection
from pytrim.surgery.cut import cut
from pytrim.surgery.verify import verify

OUTPUTS = {"out": "folder"}


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--net", type=Path, required=True, help="train_val prototxt (the topology)")
    p.add_argument("--deploy", type=Path, help="deploy prototxt to rewrite too")
    p.add_argument("--weights", type=Path, required=True, help="caffemodel to cut")
    p.add_argument("--selection", type=Path, required=True, help="selection JSON from choose")
    what = "folder for train_val.prototxt, [deploy.prototxt,] trimmed.caffemodel, recipe.json"
    p.add_argument("--out", type=Path, required=True, help=what)
    p.add_argument("--verify", action="store_true", help="verify the cut (exits 1 if it fails)")
    p.add_argument("--allow-inexact", action="store_true",
                   help="cut through layers that mix channels (LRN across channels); verification then bounds "
                        "their deviation")  # fmt: skip
    p.add_argument("--repeats", type=int, default=5, help="forward-time samples per net (default 5; 0: no timing)")
    p.add_argument("--onnx", action="store_true", help="also write <out>/trimmed.onnx, verified in ONNX Runtime")
    add_fold(p)


def execute(args: argparse.Namespace) -> dict[str, Any]:
    net, deploy = current_format(args.net, "net"), current_format(args.deploy, "net")
    weights = current_format(args.weights, "weights")
    selections = load_selection(args.selection, weights=weights)
    nets = [net] + ([deploy] if deploy else [])
    outs = [args.out / "train_val.prototxt"] + ([args.out / "deploy.prototxt"] if deploy else [])
    fold = fold_of(args, weights)
    result = cut(nets, weights, selections, outs, args.out / "trimmed.caffemodel", args.allow_inexact, fold)
    for name, reasons in result.inexact.items():
        print(f"note: the cut of {name} is not exact: {'; '.join(reasons)}")
    for name in result.widths_before:
        print(f"{name}: {result.widths_before[name]} -> {result.widths_after[name]}")
    cost = cost_of_cut(deploy or net, weights, outs[-1], result.weights, args.repeats)
    print(f"parameters {result.params_before:,} -> {result.params_after:,} ({cost['params_ratio']:.2f}x), MACs "
          f"{cost['macs_ratio']:.2f}x fewer{cost_text(cost)}: {result.weights}")  # fmt: skip
    summary = {"params_before": result.params_before, "params_after": result.params_after, "cost": cost}
    summary |= {"widths": result.widths_after, "inexact": result.inexact}
    if args.verify:
        check = verify(net, weights, outs[0], result.weights, selections, allow_inexact=args.allow_inexact, fold=fold)
        summary["verify"] = check.to_json()
        print(check.verdict())
        if not check.ok:
            raise VerifyFailed(check.failure())
    if args.onnx:
        summary["onnx"] = save_onnx(outs[-1], result.weights, args.out / "trimmed.onnx")
        print(f"export: OK in ONNX Runtime (largest relative difference {summary['onnx']['max_relative_diff']:.3g}): "
              f"{args.out / 'trimmed.onnx'}")  # fmt: skip
    return summary
