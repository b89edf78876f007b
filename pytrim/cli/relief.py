"""NN Relief on LeNet-300-100 and LeNet-5, iterated as its authors run it (make lenet-relief).

Per round: scores on a fixed random sample of training images, the authors' per-neuron rule
(alpha of each neuron's importance kept, the bias ranked among its connections), dead and
orphaned neurons removed, then retraining with the masks held at zero (Adam, lr 1e-3, weight
decay 5e-4) keeping the checkpoint with the best validation accuracy. Writes
<out>/<net>/report.json per net and <out>/report.json: per net `baseline` {params, top1} and
`rounds` [{round, nonzero, compression, top1, top1_before, val_top1}]; top-1 is on the test
set, which no decision sees. Baselines missing from models/ are trained first.
"""

from __future__ import annotations

from pathlib import Path

from pytrim.cli import add_common, finish, names, parser
from pytrim.cli.compare_criteria import NETS
from pytrim.errors import BadInput
from pytrim.files import shipped, write_json
from pytrim.relief import ReliefNet, ReliefSettings, run_relief
from pytrim.train import train_baseline


def relief_net(name: str, data: Path) -> ReliefNet:
    folder, weights = NETS[name]
    net = shipped(f"prototxt/{folder}/train_val.prototxt")
    trained = train_baseline(shipped(f"prototxt/{folder}/solver.prototxt"), Path(weights), net)
    return ReliefNet(name, net, trained, trained.with_suffix(".init.caffemodel"), data / "train_lmdb",
                     data / "val_lmdb", data / "test_lmdb")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    defaults = ReliefSettings()
    p = parser(__doc__)
    p.add_argument("--nets", default="lenet300,lenet5", help="comma-separated: lenet300, lenet5")
    p.add_argument("--rounds", type=int, default=defaults.rounds, help=f"pruning rounds ({defaults.rounds})")
    p.add_argument(
        "--retrain-iters",
        type=int,
        default=defaults.retrain_iters,
        help=f"solver iterations of retraining per round ({defaults.retrain_iters}; the authors: 60 epochs)",
    )
    p.add_argument("--alpha-conv", type=float, default=defaults.alpha_conv)
    p.add_argument("--alpha-fc", type=float, default=defaults.alpha_fc)
    p.add_argument("--sample", type=int, default=defaults.sample, help="training images scored on (1000)")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--rewind", action="store_true", help="rewind the surviving weights to their initial values")
    p.add_argument("--data", type=Path, default=Path("data/lenet"), help="train/val/test LMDBs (data/lenet)")
    p.add_argument("--out", type=Path, default=Path("runs/lenet-relief"))
    add_common(p)
    args = p.parse_args(argv)
    settings = ReliefSettings(args.alpha_conv, args.alpha_fc, args.rounds, args.sample, args.seed,
                              args.retrain_iters, rewind=args.rewind)  # fmt: skip
    report = {}
    for name in names(args.nets) or []:
        if name not in NETS:
            raise BadInput(f"unknown net {name!r} (lenet300 or lenet5)")
        result = run_relief(relief_net(name, args.data), settings, args.out / name)
        report[name] = {"baseline": result["baseline"], "rounds": result["rounds"], "settings": result["settings"]}
        write_json(args.out / "report.json", report)
    finish(args, report)
    return 0
