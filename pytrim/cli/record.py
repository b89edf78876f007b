"""Results of record: copy the results of the runs the documentation cites from runs/ into
results/ (with the machine, the date and the commit they came from), then regenerate every
table README.md and docs/ draw from them (the blocks marked `<!-- record: NAME -->`).

python -m pytrim record            # after `make lenet-trim`, `make coverage`, ...: make record
python -m pytrim record --check    # only say which tables differ from the record (exit 1 if any)

Run it from the repository root. A run that has not been made is left out: its table says
which command makes it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytrim.core.errors import BadInput
from pytrim.experiments.record import record, render, stale_blocks


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--check", action="store_true", help="only check that the documentation's tables are the record's")


def execute(args: argparse.Namespace) -> dict[str, Any]:
    root = Path.cwd()
    if not (root / "README.md").is_file() or not (root / "docs").is_dir():
        raise BadInput(f"{root} is not pytrim's repository root (no README.md and docs/): run `record` from there")
    if args.check:
        stale = stale_blocks(root)
        if stale:
            raise BadInput(f"{len(stale)} tables differ from the record (make record): {', '.join(stale[:5])}")
        print("every table of README.md and docs/ is the record's")
        return {"stale": []}
    recorded = record(root)
    changed = render(root)
    print(f"recorded (new or changed): {', '.join(recorded) or 'nothing'}")
    print(f"pages regenerated: {', '.join(str(p.relative_to(root)) for p in changed) or 'none (all current)'}")
    return {"recorded": recorded, "pages": [str(p) for p in changed]}
