"""Results of record: the JSON of the runs the documentation cites, kept in results/ (copied
from runs/ by `pytrim record`, with where, when, on which machine and at which commit they
were measured), and the tables of README.md and docs/ generated from them.

A page marks each generated table with `<!-- record: NAME -->` ... `<!-- /record -->`;
`render` fills every such block from results/, and `stale_blocks` lists the blocks whose
text differs from what the record gives (the test suite fails on any), so no figure in the
documentation is typed by hand. A record not made yet renders as the command that makes it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pytrim.caffeio.env import pinned_machine
from pytrim.core.errors import BadInput, RunLocked
from pytrim.core.files import LOCK, FolderLock, provenance, read_json, write_atomic, write_json
from pytrim.experiments import tables

BLOCK = re.compile(r"(<!-- record: ([\w-]+) -->\n)(.*?)(<!-- /record -->)", re.S)
PAGES = ("README.md", "docs/*.md")


@dataclass(frozen=True)
class Record:
    """A run whose result the documentation cites: where the run writes it, the command that
    makes it, and how its table is drawn."""

    source: str
    command: str
    table: Callable[[dict[str, Any]], str]


RECORDS: dict[str, Record] = {
    "lenet-trim": Record("runs/lenet-trim/report.json", "make lenet-trim", tables.trim_run),
    "resnet-trim": Record("runs/resnet-trim/report.json", "make resnet-trim", tables.trim_run),
    "mobilenet-trim": Record("runs/mobilenet-trim/report.json", "make mobilenet-trim", tables.trim_run),
    "squeezenet-trim": Record("runs/squeezenet-trim/report.json", "make squeezenet-trim", tables.trim_run),
    "densenet-trim": Record("runs/densenet-trim/report.json", "make densenet-trim", tables.trim_run),
    "lenet-small": Record("runs/lenet-small/report.json", "make lenet-small", tables.trim_run),
    "coverage": Record("runs/synthetic/coverage.json", "make coverage", tables.coverage),
    "bench-speed": Record("runs/bench/speed.json", "make bench-speed", tables.speed),
    "bench-export": Record("runs/bench/export.json", "make bench-export", tables.export),
    "bench-apoz": Record("runs/bench/apoz_overhead.json", "make bench", tables.apoz_overhead),
    "bench-scale": Record("runs/bench/scale.json", "make bench-scale", tables.scale),
    "bench-peers": Record("runs/bench/peers.json", "make bench-peers", tables.peers),
    "lenet-compare": Record("runs/lenet-compare/report.json", "make lenet-compare", tables.criteria),
    "lenet-relief": Record("runs/lenet-relief/report.json", "make lenet-relief", tables.relief),
    "fresh-check": Record("runs/fresh-check/result.json", "make fresh-check", tables.fresh_check),
}
HEADLINE = ("lenet-trim", "lenet-small", "resnet-trim", "mobilenet-trim", "squeezenet-trim", "densenet-trim")


def record(root: Path, names: list[str] | None = None) -> list[str]:
    """Copy the runs that exist under `root` into root/results/ with their provenance; the
    names recorded."""
    done = []
    for name in names or list(RECORDS):
        source = root / RECORDS[name].source
        if not source.is_file() or in_progress(source.parent):
            continue
        data = read_json(source, f"result of {RECORDS[name].command}")
        kept = root / "results" / f"{name}.json"
        if kept.is_file() and read_json(kept, "record").get("data") == data:
            continue  # already the record: its provenance stays as it was
        stamp = data.get("provenance") or {}
        measured = datetime.fromtimestamp(source.stat().st_mtime, UTC).isoformat(timespec="seconds")
        entry = {"name": name, "source": RECORDS[name].source, "command": RECORDS[name].command,
                 "measured": stamp.get("date", measured), "commit": stamp.get("commit"), "dirty": stamp.get("dirty"),
                 "machine": machine_of(data), "recorded": provenance(root), "data": data}  # fmt: skip
        write_json(kept, entry)
        done.append(name)
    return done


def in_progress(folder: Path) -> bool:
    """Whether a pytrim run holds the folder's lock now (its result is not final yet)."""
    if not (folder / LOCK).is_file():
        return False
    try:
        with FolderLock(folder):
            return False
    except RunLocked:
        return True


def machine_of(data: dict[str, Any]) -> dict[str, Any]:
    """The machine a run reports it computed on (its baseline's, its own, or any entry's)."""
    for found in ((data.get("baseline") or {}).get("machine"), data.get("machine"), data):
        if isinstance(found, dict) and found.get("cpu"):
            return {key: found.get(key) for key in ("cpu", "cores", "blas_core", "blas_threads")}
    entries = [value for value in data.values() if isinstance(value, dict)]
    for entry in entries:
        if isinstance(entry.get("machine"), dict):
            return entry["machine"]
    return {key: value for key, value in pinned_machine().items() if key in ("cpu", "cores")} | {"assumed": True}


def load(root: Path) -> dict[str, dict[str, Any]]:
    """Every record in root/results/, by name."""
    found = {}
    for path in sorted((root / "results").glob("*.json")):
        entry = read_json(path, "record")
        if entry.get("name") in RECORDS:
            found[entry["name"]] = entry
    return found


def block(name: str, records: dict[str, dict[str, Any]]) -> str:
    """The markdown of one generated block."""
    if name == "headline":
        return tables.headline({n: records[n] for n in HEADLINE if n in records}, records.get("coverage"),
                               records.get("bench-speed")) + "\n"  # fmt: skip
    if name not in RECORDS:
        raise BadInput(f"a page asks for the record {name!r}, which pytrim does not know (known: {', '.join(RECORDS)})")
    if name not in records:
        return f"_Not recorded yet: run `{RECORDS[name].command}`, then `make record`._\n"
    entry = records[name]
    return RECORDS[name].table(entry["data"]) + "\n" + tables.provenance_line(entry) + "\n"


def pages(root: Path) -> list[Path]:
    return [path for pattern in PAGES for path in sorted(root.glob(pattern))]


def rendered(text: str, records: dict[str, dict[str, Any]]) -> str:
    """A page's text with every record block filled from the record."""
    return BLOCK.sub(lambda m: m.group(1) + block(m.group(2), records) + m.group(4), text)


def stale_blocks(root: Path) -> list[str]:
    """The blocks of README.md and docs/*.md that differ from what the record gives."""
    records, stale = load(root), []
    for path in pages(root):
        text = path.read_text()
        for match in BLOCK.finditer(text):
            if match.group(3) != block(match.group(2), records):
                stale.append(f"{path.relative_to(root)}: {match.group(2)}")
    return stale


def render(root: Path) -> list[Path]:
    """Rewrite every page whose record blocks are stale; the pages rewritten."""
    records, changed = load(root), []
    for path in pages(root):
        text = path.read_text()
        new = rendered(text, records)
        if new != text:
            write_atomic(path, new)
            changed.append(path)
    return changed
