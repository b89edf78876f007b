"""Export a net and its caffemodel as an ONNX model (opset 17, the batch dimension dynamic), the
TEST phase as Caffe builds it: one translation per Caffe layer type (docs/deploy.md lists them).
A train_val's TEST data layers become the model's inputs and its losses and Accuracy are left out
(said so); a layer with no ONNX meaning (a Python layer, a loss in a deploy net, an unknown type)
is one `error:` line naming it, and nothing is written.

The model is proven before it is kept: ONNX Runtime and Caffe run on the same seeded random input
(or --feed images) and every net output and every blob with a name in both must agree within
--exact-tol relative to the blob's scale; otherwise the file is removed and the worst blob named.

python -m pytrim export --net deploy.prototxt --weights net.caffemodel --out net.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytrim.caffeio.upgrade import current_format
from pytrim.cli.options import add_feed, feed_of, tolerance
from pytrim.export.save import save_onnx

OUTPUTS = {"out": "file"}


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--net", type=Path, required=True, help="the prototxt (deploy, or a train_val: its TEST phase)")
    p.add_argument("--weights", type=Path, required=True, help="its caffemodel")
    p.add_argument("--out", type=Path, required=True, help="the ONNX model to write (.onnx)")
    p.add_argument("--exact-tol", type=tolerance, default=1e-5, help="relative tolerance of every blob (default 1e-5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input (default 0)")
    add_feed(p)


def execute(args: argparse.Namespace) -> dict[str, Any]:
    net, weights = current_format(args.net, "net"), current_format(args.weights, "weights")
    result = save_onnx(net, weights, args.out, feed_of(args), args.exact_tol, args.seed)
    if result["left_out"]:
        print(f"note: left out of the model (they need labels): {', '.join(result['left_out'])}")
    print(f"inputs {', '.join(result['inputs'])}; outputs {', '.join(result['outputs'])}; {result['nodes']} nodes")
    print(f"export: OK in ONNX Runtime (every layer from Caffe's inputs: largest relative difference "
          f"{result['max_relative_diff']:.3g} at {result['worst']!r}, tolerance {args.exact_tol:g}; the outputs "
          f"from the net's inputs: {result['end_to_end_max_relative_diff']:.3g}): {args.out}")  # fmt: skip
    return result
