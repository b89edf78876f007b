"""Cut the selected neurons out of a net: new train_val/deploy prototxts and caffemodel.

Only num_output of trimmed layers changes in the prototxts; every consumer of a trimmed
layer loses the matching inputs. Unsupported topology is refused before anything is
written, and the outputs appear together or not at all. With --verify the result is
checked against the original with the removed neurons silenced.
"""

from __future__ import annotations

from pathlib import Path

from pytrim.choose import load_selection
from pytrim.cli import add_common, add_fold, finish, fold_of, parser
from pytrim.cut import cut
from pytrim.errors import StepFailed
from pytrim.files import check_outputs
from pytrim.upgrade import current_format


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--net", type=Path, required=True, help="train_val prototxt (the topology)")
    p.add_argument("--deploy", type=Path, help="deploy prototxt to rewrite too")
    p.add_argument("--weights", type=Path, required=True, help="caffemodel to cut")
    p.add_argument("--selection", type=Path, required=True, help="selection JSON from tools/choose.py")
    p.add_argument(
        "--out-dir", type=Path, required=True, help="writes train_val.prototxt, [deploy.prototxt,] trimmed.caffemodel"
    )
    p.add_argument("--verify", action="store_true", help="verify the cut (exits 1 if it fails)")
    p.add_argument(
        "--allow-inexact",
        action="store_true",
        help="cut through layers that mix channels (LRN across channels); verification then reports the deviation",
    )
    add_fold(p)
    add_common(p)
    args = p.parse_args(argv)
    inputs = {"--net": args.net, "--deploy": args.deploy, "--weights": args.weights, "--selection": args.selection}
    check_outputs(inputs, {"--out-dir": args.out_dir})
    net, deploy = current_format(args.net, "net"), current_format(args.deploy, "net")
    weights = current_format(args.weights, "weights")
    selections = load_selection(args.selection, weights=weights)
    nets = [net] + ([deploy] if deploy else [])
    outs = [args.out_dir / "train_val.prototxt"] + ([args.out_dir / "deploy.prototxt"] if deploy else [])
    fold = fold_of(args)
    result = cut(nets, weights, selections, outs, args.out_dir / "trimmed.caffemodel", args.allow_inexact, fold)
    for name, reasons in result.inexact.items():
        print(f"note: the cut of {name} is not exact: {'; '.join(reasons)}")
    for name in result.widths_before:
        print(f"{name}: {result.widths_before[name]} -> {result.widths_after[name]}")
    ratio = result.params_before / result.params_after
    print(f"parameters {result.params_before:,} -> {result.params_after:,} ({ratio:.2f}x): {result.weights}")
    summary = {"params_before": result.params_before, "params_after": result.params_after}
    summary |= {"widths": result.widths_after, "inexact": result.inexact}
    if args.verify:
        from pytrim.verify import verify

        check = verify(net, weights, outs[0], result.weights, selections, allow_inexact=args.allow_inexact, fold=fold)
        summary["verify"] = check.to_json()
        print(f"verify: {'OK' if check.ok else 'FAILED'} (max relative difference {check.max_relative:.3g})")
        if not check.ok:
            raise StepFailed("verification failed: " + "; ".join(check.problems or ["differences above tolerance"]))
    finish(args, summary)
    return 0
