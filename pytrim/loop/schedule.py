"""A trimming run as a schedule file (TOML) says it: nets, weights, solvers, and per iteration
which layers are trimmed and how. Every value is checked when the file is read (types,
ranges, finite numbers, iteration numbers, rule and plan consistency), and `validate` checks
what the values name against the net itself (layers that exist and can be trimmed, the
metric's blob) before any work, so a typo fails before a baseline and a statistics pass, and
no run folder is made."""

from __future__ import annotations

import copy
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pytrim.caffeio.netcheck import probe
from pytrim.caffeio.proto import read_net
from pytrim.core.errors import BadInput
from pytrim.criteria.scores import UNIT
from pytrim.feeds.source import data_source
from pytrim.graph.build import net_graph
from pytrim.graph.queries import group_of
from pytrim.stats.evaluate import ACCURACY, check_metric, find_scores
from pytrim.surgery.choose import RULES, Rule

AUTO = "auto"


@dataclass
class LayerPlan:
    """How one iteration trims its layers (`layers` "auto": the paper's plan, pytrim.loop.plan)."""

    layers: list[str] | str
    criterion: str = "apoz"  # any unit criterion of pytrim.criteria.scores
    rule: str = "mean_std"  # mean_std (mean + k std of the scores), ratio, count, keep (a width plan)
    k: float = 1.0
    ratio: float = 0.0
    count: int = 0
    min_keep: dict[str, int] = field(default_factory=dict)
    widths: dict[str, int] = field(default_factory=dict)  # a width plan: keep exactly these
    round_to: int = 1  # kept widths rounded up to a multiple of this
    finetune_iters: int = 2000
    finetune_lr: float | None = None  # the fine-tuning solver's base_lr unless set
    eval_every: int = 0  # score a snapshot on the validation split every N iterations; keep the best (0: the last)
    patience: int = 3  # with eval_every: stop retraining after this many evaluations without improvement
    max_finetune_iters: int = 0  # with eval_every: retrain longer, up to this, while it improves beyond the tolerance

    def rule_for(self, layer: str) -> Rule:
        if layer in self.widths:
            return Rule("keep", keep=self.widths[layer])
        return Rule(self.rule, k=self.k, ratio=self.ratio, count=self.count, min_keep=self.min_keep.get(layer, 1),
                    round_to=self.round_to)  # fmt: skip

    def settings(self) -> dict[str, Any]:
        """Everything that decides which neurons go (part of the select step's key)."""
        retraining = ("finetune_iters", "finetune_lr", "eval_every", "patience", "max_finetune_iters")
        found = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in retraining}
        return found if self.round_to != 1 else {k: v for k, v in found.items() if k != "round_to"}

    def named_layers(self) -> list[str]:
        """Every layer the plan names (its list, min_keep, widths)."""
        listed = [] if self.layers == AUTO else list(self.layers)
        return list(dict.fromkeys([*listed, *self.min_keep, *self.widths]))


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
    tolerance: float = 0.2  # how far (points of top-1, or the metric's units) the result may fall
    metric: str = ACCURACY  # what decides: top-1, or a TEST-phase output blob of the net
    lower_is_better: bool = False  # the metric's direction (a loss: true)
    auto_start: int = 2  # layers = "auto": the groups the first iteration trims
    auto_grow: int | None = 2  # layers = "auto": the neighbours that join per iteration at most (None: all)
    retries: int = 2  # smaller steps tried from the same parent when a try is not accepted (0: none)
    stats_images: int | None = None  # images for the statistics (default: all of stats_data)
    scratch: bool = True
    scratch_iters: int | None = None  # default: the baseline solver's max_iter
    train_missing_weights: bool = False  # train the baseline when `weights` does not exist
    allow_inexact: bool = False  # cut through LRN across channels (verification bounds the deviation)
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

    @property
    def points(self) -> float:
        """The metric's tolerance unit: accuracy's tolerance is in points (1/100)."""
        return 100.0 if self.metric == ACCURACY else 1.0


def _type_error(where: str, key: str, value: Any, wanted: str) -> BadInput:
    return BadInput(f"{where}: {key} must be {wanted}, not {value!r}")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _per_layer(value: Any, least: int) -> bool:
    return isinstance(value, dict) and all(_whole(v, least) for v in value.values())


CHECKS = {
    "layers": (lambda v: v == AUTO or (isinstance(v, list) and bool(v) and all(isinstance(x, str) for x in v)),
               'a list of names, or "auto"'),
    "criterion": (lambda v: v in UNIT, f"one of {', '.join(UNIT)}"),
    "rule": (lambda v: v in RULES, f"one of {', '.join(RULES)}"),
    "k": (_number, "a finite number"),
    "ratio": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "count": (lambda v: _whole(v, 0), "a whole number >= 0"),
    "min_keep": (lambda v: _per_layer(v, 1), "{layer = N} with N >= 1"),
    "widths": (lambda v: _per_layer(v, 1), "{layer = N} with N >= 1"),
    "round_to": (lambda v: _whole(v, 1), "a whole number >= 1"),
    "finetune_iters": (lambda v: _whole(v, 0), "a whole number >= 0"),
    "finetune_lr": (lambda v: _number(v) and v > 0, "a number > 0"),
    "eval_every": (lambda v: _whole(v, 0), "a whole number >= 0"),
    "patience": (lambda v: _whole(v, 1), "a whole number >= 1"),
    "max_finetune_iters": (lambda v: _whole(v, 0), "a whole number >= 0"),
}  # fmt: skip


def _check_value(where: str, key: str, value: Any) -> None:
    """The type and range of one [trim] (or [[iteration]]) value."""
    if key not in CHECKS:
        raise BadInput(f"{where}: unknown key {key!r} (known: {', '.join(CHECKS)})")
    ok, wanted = CHECKS[key]
    if not ok(value):
        raise _type_error(where, key, value, wanted)


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
    "net": (lambda v: isinstance(v, str), "a path"),
    "deploy": (lambda v: isinstance(v, str), "a path"),
    "weights": (lambda v: isinstance(v, str), "a path"),
    "baseline_solver": (lambda v: isinstance(v, str), "a path"),
    "finetune_solver": (lambda v: isinstance(v, str), "a path"),
    "out": (lambda v: isinstance(v, str), "a path"),
    "iterations": (lambda v: _whole(v, 0), "a whole number >= 0"),
    "tolerance": (_number, "a finite number"),
    "metric": (lambda v: isinstance(v, str) and bool(v), "a blob name, or accuracy"),
    "lower_is_better": (lambda v: isinstance(v, bool), "true or false"),
    "auto_start": (lambda v: _whole(v, 1), "a whole number >= 1"),
    "auto_grow": (lambda v: v == "all" or _whole(v, 1), 'a whole number >= 1, or "all"'),
    "retries": (lambda v: _whole(v, 0) and v <= 9, "a whole number from 0 to 9"),
    "stats_images": (lambda v: _whole(v, 1), "a whole number >= 1"),
    "scratch": (lambda v: isinstance(v, bool), "true or false"),
    "scratch_iters": (lambda v: _whole(v, 1), "a whole number >= 1"),
    "train_missing_weights": (lambda v: isinstance(v, bool), "true or false"),
    "allow_inexact": (lambda v: isinstance(v, bool), "true or false"),
    "fold_mean": (lambda v: isinstance(v, bool), "true or false"),
    "val_data": (lambda v: isinstance(v, str), "a path"),
    "stats_data": (lambda v: isinstance(v, str), "a path"),
    "curve_every": (lambda v: _whole(v, 0), "a whole number >= 0"),
    "name": (lambda v: isinstance(v, str), "a name"),
}
REQUIRED = ("net", "weights", "baseline_solver", "finetune_solver", "out", "iterations")
RENAMED = {"stats_limit": "stats_images"}


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BadInput(f"schedule file not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not valid TOML: {exc}") from None


def _check_top(path: Path, data: dict[str, Any]) -> None:
    for key, value in data.items():
        if key in RENAMED:
            raise BadInput(f"{path}: {key} is now called {RENAMED[key]}")
        if key not in TOP_KEYS:
            raise BadInput(f"{path}: unknown key {key!r} (known: {', '.join(TOP_KEYS)}, [trim], [[iteration]])")
        ok, wanted = TOP_KEYS[key]
        if not ok(value):
            raise _type_error(str(path), key, value, wanted)
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise BadInput(f"{path}: missing keys: {', '.join(missing)}")


def _iterations(path: Path, entries: Any, count: int) -> dict[int, dict[str, Any]]:
    """[[iteration]] tables: `number` (1 .. iterations) and the [trim] keys they override."""
    if not isinstance(entries, list):
        raise BadInput(f"{path}: iteration must be an array of tables ([[iteration]])")
    result = {}
    for table in entries:
        entry = dict(table)
        number = entry.pop("number", None)
        if not _whole(number, 1):
            raise BadInput(f"{path}: every [[iteration]] needs number = N (N >= 1), not {number!r}")
        if number > count:
            raise BadInput(f"{path}: [[iteration]] number {number} is beyond iterations = {count}")
        for key, value in entry.items():
            _check_value(f"{path} [[iteration]] {number}", key, value)
        result[number] = entry
    return result


def _check_plan(where: str, plan: LayerPlan) -> None:
    """A rule that needs more than its keys give is refused (a width plan without widths)."""
    if plan.rule == "keep":
        listed = [] if plan.layers == AUTO else plan.layers
        lacking = [name for name in listed if name not in plan.widths] if listed else ["every layer"]
        if plan.layers == AUTO or lacking:
            raise BadInput(f'{where}: rule = "keep" is a width plan: widths must give {", ".join(lacking)}')


def load_schedule(path: str | Path, **overrides: Any) -> Schedule:
    """Read and check a schedule; keyword overrides (not None) replace top-level or [trim] keys."""
    path = Path(path)
    data = _read_toml(path)
    trim = data.pop("trim", {})
    raw_iterations = data.pop("iteration", [])
    for key, value in overrides.items():
        if value is not None:
            (trim if key in LayerPlan.__dataclass_fields__ else data)[key] = value
    _check_top(path, data)
    per_iteration = _iterations(path, raw_iterations, data["iterations"])
    if "layers" not in trim:
        raise BadInput(f"{path}: missing keys: trim.layers")
    for key, value in trim.items():
        _check_value(f"{path} [trim]", key, value)
    schedule = build(path, data, LayerPlan(**trim), per_iteration)
    for number in range(1, schedule.iterations + 1):
        _check_plan(f"{path} (iteration {number})", schedule.plan_for(number))
        _check_retraining(f"{path} (iteration {number})", schedule.plan_for(number), schedule)
    return schedule


def _check_retraining(where: str, plan: LayerPlan, schedule: Schedule) -> None:
    """Snapshots are scored on the validation split, never on the test set; an extension is longer."""
    if plan.eval_every and schedule.val_data is None:
        raise BadInput(f"{where}: eval_every scores retraining snapshots on the validation split: give val_data")
    if plan.max_finetune_iters and plan.max_finetune_iters < plan.finetune_iters:
        raise BadInput(f"{where}: max_finetune_iters ({plan.max_finetune_iters}) is below finetune_iters "
                       f"({plan.finetune_iters})")  # fmt: skip


def build(path: Path, data: dict[str, Any], plan: LayerPlan, per_iteration: dict[int, dict[str, Any]]) -> Schedule:
    """The Schedule of checked values (paths resolved from the schedule's folder)."""
    paths = {key: resolve(data[key], path) for key in ("net", "weights", "baseline_solver", "finetune_solver")}
    optional = {key: resolve(data[key], path) if data.get(key) else None
                for key in ("deploy", "val_data", "stats_data")}  # fmt: skip
    plain = ("tolerance", "metric", "lower_is_better", "auto_start", "stats_images", "scratch", "scratch_iters",
             "train_missing_weights", "allow_inexact", "fold_mean", "curve_every", "retries", "auto_grow")  # fmt: skip
    given = {key: data[key] for key in plain if key in data}
    given["auto_grow"] = None if given.get("auto_grow") == "all" else given.get("auto_grow", 2)
    given["tolerance"] = float(given.get("tolerance", 0.2))
    if given.get("lower_is_better") and given.get("metric", ACCURACY) == ACCURACY:
        raise BadInput(f"{path}: lower_is_better needs a metric (a TEST output blob such as a loss): top-1 "
                       "accuracy is better when higher")  # fmt: skip
    return Schedule(**paths, **optional, out=Path(data["out"]), iterations=data["iterations"], plan=plan,
                    overrides=per_iteration, name=data.get("name", path.stem), **given)  # fmt: skip


def validate(schedule: Schedule) -> None:
    """What the schedule names exists in its net: every layer of [trim] and [[iteration]]
    (layers, min_keep, widths) belongs to a trimmable channel group, and the metric is the
    net's accuracy or one of its TEST-phase blobs."""
    net_param, graph = net_graph(schedule.net, allow_inexact=schedule.allow_inexact)
    plans = [schedule.plan] + [schedule.plan_for(n) for n in schedule.overrides]
    for plan in plans:
        for name in plan.named_layers():
            group_of(graph, name)  # raises, naming the layer and why
    label = data_source(read_net(schedule.net)).label_blob
    shapes = probe(schedule.net).blobs if schedule.metric != ACCURACY else None
    check_metric(net_param, schedule.metric, find_scores(net_param, label), shapes)
