"""Options shared by several commands, each with one name (README's vocabulary table;
tests/test_cli.py holds every command to it), and their parsing into library values."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytrim.core.errors import BadInput
from pytrim.core.files import write_json
from pytrim.feeds.source import Feed
from pytrim.stats.statsfile import check_stats_match, load_stats


def names(text: str | None) -> list[str] | None:
    """A comma-separated list of names (None stays None)."""
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


def net_names(text: str | None, known: tuple[str, ...] | list[str]) -> list[str]:
    """--nets: comma-separated names, each one of `known` (one line naming the others)."""
    chosen = names(text) or []
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise BadInput(f"--nets: unknown {', '.join(unknown)} (one of {', '.join(known)})")
    return chosen


def numbers(text: str, cast: Callable[[str], Any] = float, option: str = "") -> tuple[Any, ...]:
    """A comma-separated list of numbers, each finite."""
    try:
        values = tuple(cast(v) for v in text.split(","))
    except ValueError:
        raise BadInput(f"{option or 'expected'} {text!r}: expected comma-separated numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise BadInput(f"{option} {text!r}: numbers must be finite")
    return values


def per_layer(text: str | None, cast: Callable[[str], Any] = float, option: str = "") -> dict[str, Any]:
    """LAYER=VALUE,LAYER=VALUE (the one syntax of every per-layer list), values finite."""
    result = {}
    for item in names(text) or []:
        if "=" not in item:
            raise BadInput(f"{option}: expected LAYER=VALUE[,LAYER=VALUE...], got {item!r}")
        name, value = item.split("=", 1)
        try:
            result[name.strip()] = cast(value)
        except ValueError:
            raise BadInput(f"{option} {item!r}: {value!r} is not a valid value") from None
        if not math.isfinite(result[name.strip()]):
            raise BadInput(f"{option} {item!r}: the value must be finite")
    return result


def finite(text: str) -> float:
    """argparse type: a finite number (nan and inf are refused)."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def tolerance(text: str) -> float:
    """argparse type: a tolerance, finite and >= 0."""
    value = finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a tolerance must be >= 0")
    return value


def check_direction(metric: str | None, lower_is_better: bool) -> None:
    """--lower-is-better turns a metric's direction (a loss): top-1 accuracy has one."""
    if lower_is_better and metric in (None, "accuracy"):
        raise BadInput("--lower-is-better needs --metric (a TEST output blob such as a loss): top-1 accuracy is "
                       "better when higher")  # fmt: skip


def positive(text: str) -> int:
    """argparse type: a whole number >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def write_benchmark(out: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Write a benchmark's result to `out` and print its summary, then the file's path."""
    write_json(out, result)
    for key, value in result["summary"].items():
        print(f"{key}: {value}")
    print(out)
    return result


def add_images(parser: argparse.ArgumentParser, what: str = "images used (default: all)") -> None:
    """--images N: how many images a command reads (the first N of its data)."""
    parser.add_argument("--images", type=positive, help=what)


def add_feed(parser: argparse.ArgumentParser) -> None:
    """Options that feed a deploy net (Input or MemoryData) its TEST images."""
    group = parser.add_argument_group("images for a deploy net (Input or MemoryData layer)")
    group.add_argument("--feed", type=Path, help="an LMDB of Caffe Datum records, or an image list ('path label')")
    group.add_argument("--feed-root", type=Path, help="folder the image list's paths are relative to")
    group.add_argument("--mean", help="per-channel mean (BGR) to subtract, e.g. 104,117,123")
    group.add_argument("--scale", type=finite, default=1.0, help="multiply by this after the mean (default 1)")
    what = "resize images first: H,W, or N for a short side of N (default: list images to a short side of 256 "
    what += "when the input is larger than 128 pixels; LMDB records: none)"
    group.add_argument("--resize", help=what)


def feed_of(args: argparse.Namespace) -> Feed | None:
    """The Feed the --feed options describe, or None."""
    if args.feed is None:
        for option in ("feed_root", "mean", "resize"):
            if getattr(args, option) is not None:
                raise BadInput(f"--{option.replace('_', '-')} is for a deploy net fed with --feed")
        return None
    mean = numbers(args.mean, option="--mean") if args.mean else ()
    resize = None
    if args.resize:
        sizes = numbers(args.resize, int, "--resize")
        if len(sizes) not in (1, 2) or min(sizes) < 1:
            raise BadInput(f"--resize {args.resize!r}: expected H,W or N (a short side)")
        resize = sizes[0] if len(sizes) == 1 else (sizes[0], sizes[1])
    return Feed(args.feed, mean, args.scale, args.feed_root, resize)


def add_workers(parser: argparse.ArgumentParser) -> None:
    """--workers / --ray-address: run the work on Ray (pytrim.scale.cluster)."""
    parser.add_argument("--workers", type=positive, help="split the work among N local Ray workers (one core each)")
    parser.add_argument(
        "--ray-address", help="run on an existing Ray cluster, HOST:PORT of its head (or set RAY_ADDRESS)"
    )


def workers_of(args: argparse.Namespace) -> dict[str, Any]:
    return {"workers": args.workers, "address": args.ray_address}


def add_fold(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fold-mean",
        action="store_true",
        help="fold removed channels' mean outputs into their consumers' biases (means from --stats, "
        "collected with collect --means on --weights)",
    )
    parser.add_argument("--stats", type=Path, help="--fold-mean: the statistics file with the means")


def fold_of(args: argparse.Namespace, weights: Path) -> dict | None:
    """The means of --stats for --fold-mean (measured on `weights`: checked), or None."""
    if not args.fold_mean:
        return None
    if args.stats is None:
        raise BadInput("--fold-mean needs --stats: a statistics file collected with --means")
    stats = load_stats(args.stats)
    check_stats_match(stats, weights)
    if not stats.means:
        raise BadInput(f"--stats {args.stats}: it holds no means (collect it with --means)")
    return stats.means
