"""Compare pruning criteria on LeNet-5 and LeNet-300-100 (make lenet-compare).

Same nets, same data, same retraining budget for every criterion: APoZ, mean activation,
L1 filter norm, first-order Taylor and random (neurons cut physically, the same fraction
of every trimmable layer); weight magnitude (Han et al.) and NN Relief (connections
masked, held at zero through retraining; Relief's orphaned neurons cut). Writes
<out>/report.md, report.json (one entry per criterion and net: criterion, net, params,
nonzero, compression, top1, top1_before, flops) and accuracy_vs_compression.png.
Baselines are read from (or trained into) models/... of the current directory.
"""

from __future__ import annotations

from pathlib import Path

from pytrim.cli import add_common, finish, names, parser
from pytrim.compare import NetSpec, Settings, markdown, run_net, write
from pytrim.criteria import CONNECTION, UNIT
from pytrim.errors import BadInput
from pytrim.files import shipped


def spec(name: str, folder: str, weights: str) -> NetSpec:
    p = shipped(Path("prototxt") / folder)
    return NetSpec(
        name,
        p / "train_val.prototxt",
        p / "deploy.prototxt",
        Path(weights),
        p / "solver.prototxt",
        p / "finetune_solver.prototxt",
    )


NETS = {
    "lenet5": spec("lenet5", "lenet", "models/lenet/lenet.caffemodel"),
    "lenet300": spec("lenet300", "lenet300", "models/lenet300/lenet300.caffemodel"),
}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--nets", default="lenet5,lenet300", help="comma-separated: lenet5, lenet300")
    p.add_argument("--criteria", default=",".join(UNIT + CONNECTION), help="comma-separated criteria")
    p.add_argument("--ratio", type=float, default=0.5, help="unit criteria: fraction cut per layer (0.5)")
    p.add_argument("--quality", type=float, default=1.0, help="magnitude: |w| > quality x std(w) kept (1.0)")
    p.add_argument("--alpha-conv", type=float, default=0.9, help="NN Relief alpha for convolutions (0.9)")
    p.add_argument("--alpha-fc", type=float, default=0.95, help="NN Relief alpha for fc layers (0.95)")
    p.add_argument("--finetune-iters", type=int, default=1000, help="retraining budget (1000)")
    p.add_argument("--stats-images", type=int, default=2000, help="images for the statistics (2000)")
    p.add_argument("--out", type=Path, default=Path("runs/lenet-compare"))
    add_common(p)
    args = p.parse_args(argv)
    settings = Settings(
        args.ratio, args.quality, args.alpha_conv, args.alpha_fc, args.finetune_iters, args.stats_images
    )
    criteria = names(args.criteria) or []
    unknown = [c for c in criteria if c not in UNIT + CONNECTION]
    if unknown:
        raise BadInput(f"unknown criteria: {', '.join(unknown)} (choose from {', '.join(UNIT + CONNECTION)})")
    entries = []
    for name in names(args.nets) or []:
        if name not in NETS:
            raise BadInput(f"unknown net {name!r} (lenet5 or lenet300)")
        entries += run_net(NETS[name], criteria, settings, args.out)
        write(entries, settings, args.out)
    finish(args, {"entries": entries})
    print()
    print(markdown(entries, settings))
    print(f"written: {args.out / 'report.md'}, report.json, accuracy_vs_compression.png")
    return 0
