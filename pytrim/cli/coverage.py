"""Benchmark: which Convolution/InnerProduct layers of the public model-zoo nets pytrim can
trim, each net end to end on filler weights (python -m pytrim synthetic) at full size.

For each net the generator's deploy prototxt (pytrim/zoo.py) goes through collect, choose
(a fraction of every trimmable group), cut, verify and two solver iterations, with
--allow-inexact (AlexNet, CaffeNet and GoogLeNet normalise across channels). Writes
<out>/<net>/report.json per net and <out>/coverage.json: per net the coverage, whether the
exact cuts verify within 1e-5, the cut's seconds and peak memory against the caffemodel.
"""

from __future__ import annotations

from pathlib import Path

from pytrim.cli import add_common, finish, names, parser
from pytrim.files import write_json

NETS = ("resnet50", "googlenet", "squeezenet11", "mobilenet", "mobilenet_v2", "vgg16", "alexnet", "caffenet")


def summary(report: dict) -> dict:
    exact = report.get("verify_exact_groups", report["verify"])
    cut = report["steps"]["cut"]
    return {
        **report["coverage"],
        "verify_exact": exact["exact"],
        "verify_exact_max_relative_diff": exact["max_relative_diff"],
        "verify_all_max_relative_diff": report["verify"]["max_relative_diff"],
        "inexact": report["verify"]["inexact"],
        "cut_seconds": cut["seconds"],
        "cut_peak_rss_mb": cut["peak_rss_mb"],
        "caffemodel_mb": report["caffemodel_mb"],
        "cut_rss_over_caffemodel": report["cut_rss_over_caffemodel"],
        "params_before": report["params_before"],
        "params_after": report["params_after"],
    }


def main(argv: list[str] | None = None) -> int:
    from pytrim.synthetic import Options, run
    from pytrim.zoo import write

    p = parser(__doc__)
    p.add_argument("--nets", default=",".join(NETS), help=f"comma-separated (default: {','.join(NETS)})")
    p.add_argument("--fraction", type=float, default=0.25, help="fraction of each group cut (0.25)")
    p.add_argument("--out", type=Path, default=Path("runs/synthetic"))
    add_common(p)
    args = p.parse_args(argv)
    results = {}
    for name in names(args.nets) or []:
        folder = args.out / name
        (deploy,) = write(name, folder / "prototxt", ["deploy"])
        print(f"{name}: synthetic run in {folder}", flush=True)
        opts = Options(args.fraction, images=4, batch=2, allow_inexact=True)
        results[name] = summary(run(deploy, folder, opts, log=lambda _: None))
        entry = results[name]
        print(
            f"  {entry['trimmable']}/{entry['conv_ip_layers']} Convolution/InnerProduct layers trimmable; exact cuts "
            f"verify {entry['verify_exact_max_relative_diff']:.2g}; cut {entry['cut_seconds']:.1f} s, "
            f"{entry['cut_rss_over_caffemodel']:.2f}x the caffemodel's size",
            flush=True,
        )
        write_json(args.out / "coverage.json", results)
    finish(args, results)
    return 0
