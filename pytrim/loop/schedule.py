"""A trimming run as a schedule file (TOML) says it: nets, weights, solvers, and per iteration
which layers are trimmed and how. Every value is checked when the file is read, so a typo
fails before any work (not after a baseline and a statistics pass)."""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pytrim.core.errors import BadInput
from pytrim.criteria.scores import UNIT
from pytrim.surgery.choose import RULES, Rule


@dataclass
class LayerPlan:
    """How one iteration trims its layers."""

    layers: list[str]
    criterion: str = "apoz"  # any unit criterion of pytrim.criteria.scores
    rule: str = "mean_std"  # mean_std (mean + k std of the scores), ratio, count, keep (a width plan)
    k: float = 1.0
    ratio: float = 0.0
    count: int = 0
    min_keep: dict[str, int] = field(default_factory=dict)
    widths: dict[str, int] = field(default_factory=dict)  # a width plan: keep exactly these
    finetune_iters: int = 2000
    finetune_lr: float | None = None  # the fine-tuning solver's base_lr unless set

    def rule_for(self, layer: str) -> Rule:
        if layer in self.widths:
            return Rule("keep", keep=self.widths[layer])
        return Rule(self.rule, k=self.k, ratio=self.ratio, count=self.count, min_keep=self.min_keep.get(layer, 1))

    def settings(self) -> dict[str, Any]:
        """Everything that decides which neurons go (part of the select step's key)."""
        retraining = ("finetune_iters", "finetune_lr")
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in retraining}


@dataclass
class Schedule:
    """A trimming run, as read from its TOML file."""

    net: Path
    deploy: Path | None
    weights: Path
    baseline_solver: Path
    finetune_solver: Path
    out: Path
    iterations: int
    plan: LayerPlan
    overrides: dict[int, dict[str, Any]] = field(default_factory=dict)
    tolerance: float = 0.2  # points of top-1 below the baseline that stop the loop
    stats_images: int | None = None  # images for the statistics (default: all of stats_data)
    scratch: bool = True
    scratch_iters: int | None = None  # default: the baseline solver's max_iter
    train_missing_weights: bool = False  # train the baseline when `weights` does not exist
    allow_inexact: bool = False  # cut through LRN across channels (verification reports the deviation)
    fold_mean: bool = False  # fold removed channels' means into their consumers' biases (pytrim.surgery.fold)
    val_data: Path | None = None  # LMDB of the validation split: decisions are made on it, not on the test set
    stats_data: Path | None = None  # LMDB the statistics are measured on (default: the net's TEST data)
    curve_every: int = 0  # score the test set every N iterations while retraining (the accuracy curves)
    name: str = "trim"

    def plan_for(self, iteration: int) -> LayerPlan:
        plan = copy.deepcopy(self.plan)
        for key, value in self.overrides.get(iteration, {}).items():
            setattr(plan, key, value)
        return plan

    def inputs(self) -> dict[str, Path | None]:
        """Every file the run reads (the nets' data aside)."""
        names = ("net", "deploy", "weights", "baseline_solver", "finetune_solver", "val_data", "stats_data")
        return {name: getattr(self, name) for name in names}


def _type_error(where: str, key: str, value: Any, wanted: str) -> BadInput:
    return BadInput(f"{where}: {key} must be {wanted}, not {value!r}")


def _check_value(where: str, key: str, value: Any) -> None:
    """The type and range of one [trim] (or [[iteration]]) value."""
    number = (int, float)
    checks: dict[str, tuple[bool, str]] = {
        "layers": (
            isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value),
            "a list of names",
        ),
        "criterion": (isinstance(value, str), "a criterion name"),
        "rule": (value in RULES, f"one of {', '.join(RULES)}"),
        "k": (isinstance(value, number) and not isinstance(value, bool), "a number"),
        "ratio": (isinstance(value, number) and not isinstance(value, bool) and 0 <= value < 1, "a number in [0, 1)"),
        "count": (isinstance(value, int) and not isinstance(value, bool) and value >= 0, "a whole number >= 0"),
        "min_keep": (isinstance(value, dict) and all(isinstance(v, int) for v in value.values()), "{layer = N}"),
        "widths": (
            isinstance(value, dict) and all(isinstance(v, int) and v > 0 for v in value.values()),
            "{layer = N}",
        ),
        "finetune_iters": (
            isinstance(value, int) and not isinstance(value, bool) and value >= 0,
            "a whole number >= 0",
        ),
        "finetune_lr": (isinstance(value, number) and not isinstance(value, bool) and value > 0, "a number > 0"),
    }
    if key not in checks:
        raise BadInput(f"{where}: unknown key {key!r} (known: {', '.join(checks)})")
    ok, wanted = checks[key]
    if not ok:
        raise _type_error(where, key, value, wanted)
    if key == "criterion":
        if value not in UNIT:
            raise BadInput(f"{where}: unknown criterion {value!r} for the loop (one of {', '.join(UNIT)})")


def resolve(path: str, schedule_file: Path) -> Path:
    """A schedule's path: as given if absolute or present from the current directory, else
    from the nearest folder above the schedule file where it exists (the shipped schedules
    name prototxt/... and models/... from the repository root)."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    for folder in schedule_file.resolve().parents:
        if (folder / candidate).exists():
            return folder / candidate
    return candidate


TOP_KEYS = {
    "net": str,
    "deploy": str,
    "weights": str,
    "baseline_solver": str,
    "finetune_solver": str,
    "out": str,
    "iterations": int,
    "tolerance": (int, float),
    "stats_images": int,
    "scratch": bool,
    "scratch_iters": int,
    "train_missing_weights": bool,
    "allow_inexact": bool,
    "fold_mean": bool,
    "val_data": str,
    "stats_data": str,
    "curve_every": int,
    "name": str,
}
REQUIRED = ("net", "weights", "baseline_solver", "finetune_solver", "out", "iterations")


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BadInput(f"schedule file not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not valid TOML: {exc}") from None


def _check_top(path: Path, data: dict[str, Any]) -> None:
    for key, value in data.items():
        wanted = TOP_KEYS.get(key)
        if wanted is None:
            raise BadInput(f"{path}: unknown key {key!r} (known: {', '.join(TOP_KEYS)}, [trim], [[iteration]])")
        if (isinstance(value, bool) and wanted is not bool) or not isinstance(value, wanted):
            raise _type_error(str(path), key, value, "a " + getattr(wanted, "__name__", "number"))
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise BadInput(f"{path}: missing keys: {', '.join(missing)}")
    if data["iterations"] < 0:
        raise BadInput(f"{path}: iterations must be >= 0")


def _iterations(path: Path, entries: Any) -> dict[int, dict[str, Any]]:
    """[[iteration]] tables: `number` and the [trim] keys they override."""
    if not isinstance(entries, list):
        raise BadInput(f"{path}: iteration must be an array of tables ([[iteration]])")
    result = {}
    for table in entries:
        entry = dict(table)
        number = entry.pop("number", None)
        if not isinstance(number, int) or number < 1:
            raise BadInput(f"{path}: every [[iteration]] needs number = N (N >= 1), not {number!r}")
        for key, value in entry.items():
            _check_value(f"{path} [[iteration]] {number}", key, value)
        result[number] = entry
    return result


def load_schedule(path: str | Path, **overrides: Any) -> Schedule:
    """Read and check a schedule; keyword overrides (not None) replace top-level or [trim] keys."""
    path = Path(path)
    data = _read_toml(path)
    trim = data.pop("trim", {})
    per_iteration = _iterations(path, data.pop("iteration", []))
    for key, value in overrides.items():
        if value is not None:
            (trim if key in LayerPlan.__dataclass_fields__ else data)[key] = value
    _check_top(path, data)
    if "layers" not in trim:
        raise BadInput(f"{path}: missing keys: trim.layers")
    for key, value in trim.items():
        _check_value(f"{path} [trim]", key, value)
    paths = {key: resolve(data[key], path) for key in ("net", "weights", "baseline_solver", "finetune_solver")}
    return Schedule(
        **paths,
        deploy=resolve(data["deploy"], path) if data.get("deploy") else None,
        out=Path(data["out"]),
        iterations=data["iterations"],
        plan=LayerPlan(**trim),
        overrides=per_iteration,
        tolerance=float(data.get("tolerance", 0.2)),
        stats_images=data.get("stats_images"),
        scratch=data.get("scratch", True),
        scratch_iters=data.get("scratch_iters"),
        train_missing_weights=data.get("train_missing_weights", False),
        allow_inexact=data.get("allow_inexact", False),
        fold_mean=data.get("fold_mean", False),
        val_data=resolve(data["val_data"], path) if data.get("val_data") else None,
        stats_data=resolve(data["stats_data"], path) if data.get("stats_data") else None,
        curve_every=data.get("curve_every", 0),
        name=data.get("name", path.stem),
    )
