"""One task of `compare-criteria` (run by it as a child process, pytrim.sweep): prune, retrain
and measure the task a spec file describes, keep its result.json, print its entry."""

from __future__ import annotations

from pathlib import Path

from pytrim.cli import add_common, finish, parser
from pytrim.compare import run_spec
from pytrim.files import read_json


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--spec", type=Path, required=True, help="the task's spec.json (written by compare-criteria)")
    add_common(p)
    args = p.parse_args(argv)
    entry = run_spec(read_json(args.spec, "task spec"))
    finish(args, entry)
    if not args.quiet:
        print(f"{entry['criterion']} {entry['point']:g} seed {entry['seed']}: top-1 {entry['top1']:.2%}")
    return 0
