"""pytrim's commands: one module per command (a `main(argv) -> int` each), run through `run`.

`run` turns the problems a user can act on (pytrim.errors.PytrimError, and operating-system
errors on their files: a full disk, a read-only or missing folder) into one `error:` line
and exit code 1; any other exception is a bug and keeps its traceback (exit code 1).
Commands that other steps run as children write their result as JSON to `--result FILE`.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytrim.errors import BadInput, PytrimError, StepFailed
from pytrim.files import write_json

# Operating-system errors that are about the user's files or machine, not pytrim's code.
USER_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EFBIG,
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOENT,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.ENAMETOOLONG,
}


def message_of(exc: BaseException) -> str | None:
    """The one-line message for a problem the user can act on, or None for a bug."""
    if isinstance(exc, PytrimError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in USER_ERRNOS:
        name = str(exc.filename or "").removesuffix(".partial")  # name the output, not its temporary
        return f"{exc.strerror}{': ' + name if name else ''}"
    return None


def run(main: Callable[[], int]) -> None:
    """Run a command's main(); print `error: ...` and exit 1 on a problem the user can act on."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        message = message_of(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        if isinstance(exc, StepFailed):
            print("finished steps are kept: run the same command again to resume", file=sys.stderr)
        sys.exit(1)


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser whose description is the command's docstring."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_common(parser: argparse.ArgumentParser) -> None:
    """Options every command has: --result FILE (its result as JSON) and --quiet."""
    parser.add_argument("--result", type=Path, help="also write the result as JSON to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def finish(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Write the command's result where --result asks (atomically)."""
    if getattr(args, "result", None):
        write_json(args.result, result)


def names(text: str | None) -> list[str] | None:
    """A comma-separated list of names (None stays None)."""
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


def per_layer(values: list[str] | None, cast: Callable[[str], Any] = float) -> dict[str, Any]:
    """LAYER=VALUE items."""
    result = {}
    for item in values or []:
        if "=" not in item:
            raise BadInput(f"expected LAYER=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        try:
            result[name.strip()] = cast(value)
        except ValueError:
            raise BadInput(f"{item!r}: {value!r} is not a valid value") from None
    return result


def add_data(parser: argparse.ArgumentParser) -> None:
    """Options that feed a deploy net (Input or MemoryData) its TEST images."""
    group = parser.add_argument_group("images for a deploy net (Input or MemoryData layer)")
    group.add_argument("--data", type=Path, help="an LMDB of Caffe Datum records, or an image list ('path label')")
    group.add_argument("--data-root", type=Path, help="folder the image list's paths are relative to")
    group.add_argument("--mean", help="per-channel mean (BGR) to subtract, e.g. 104,117,123")
    group.add_argument("--scale", type=float, default=1.0, help="multiply by this after the mean (default 1)")


def feed_of(args: argparse.Namespace) -> Any:
    """The Feed the --data options describe, or None."""
    if args.data is None:
        return None
    from pytrim.data import Feed

    try:
        mean = tuple(float(v) for v in args.mean.split(",")) if args.mean else ()
    except ValueError:
        raise BadInput(f"--mean {args.mean!r}: expected numbers such as 104,117,123") from None
    return Feed(args.data, mean, args.scale, args.data_root)


def add_fold(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fold-mean",
        type=Path,
        metavar="STATS",
        help="fold removed channels' mean outputs (STATS: from collect --means) into their consumers' biases",
    )


def fold_of(args: argparse.Namespace) -> dict | None:
    """The means of a statistics file for --fold-mean, or None."""
    if args.fold_mean is None:
        return None
    from pytrim.collect import load_stats

    means = load_stats(args.fold_mean).means
    if not means:
        raise BadInput(f"--fold-mean {args.fold_mean}: it holds no means (collect it with --means)")
    return means


def add_workers(parser: argparse.ArgumentParser) -> None:
    """--workers / --ray-address: run the work on Ray (pytrim.distributed)."""
    parser.add_argument("--workers", type=int, help="split the work among N local Ray workers (one core each)")
    parser.add_argument(
        "--ray-address", help="run on an existing Ray cluster, HOST:PORT of its head (or set RAY_ADDRESS)"
    )
