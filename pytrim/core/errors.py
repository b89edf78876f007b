"""The problems pytrim reports to its user in one line; anything else is a bug and keeps its traceback.

Every command runs through `pytrim.cli.run`, which prints `error: <message>` (from
`user_message`) and exits 1 for a `PytrimError` or an operating-system error about the
user's files, and lets every other exception (a programming error) show its traceback.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable

SHOWN = 5  # an error names this many offenders, then how many more there are


def few(items: Iterable[object], sep: str = ", ", shown: int = SHOWN) -> str:
    """The first `shown` items joined, then "and N more": an error line stays short however
    many offenders there are (a net of 20,000 layers)."""
    listed = [str(item) for item in items]
    head = sep.join(listed[:shown])
    return head + (f" and {len(listed) - shown} more" if len(listed) > shown else "")


class PytrimError(Exception):
    """A problem the user can act on: the message says what and where."""


class BadInput(PytrimError, ValueError):
    """An input file, option or path is missing, malformed or inconsistent."""


class ModelMismatch(BadInput):
    """A caffemodel does not fit a prototxt (the differing layers and shapes are named)."""


class StatsMismatch(BadInput):
    """A statistics or selection file belongs to another net or other weights."""


class DatasetError(BadInput):
    """A dataset file is missing, truncated, corrupt or inconsistent."""


class UnsupportedTopology(BadInput):
    """The net has a layer whose channel mapping trimming cannot follow (named in the message)."""


class CaffeNotFound(PytrimError):
    """pycaffe or one of Caffe's tools is not installed."""


class VerifyFailed(PytrimError):
    """A cut is not what its selection says: the trimmed net differs from the silenced original."""


class StepFailed(PytrimError):
    """A step (often a child process) failed; what finished before it is kept. `reason` is the
    decisive line of a child's log (its `error:` line or Caffe's failed CHECK), if any."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class CaffeCrashed(StepFailed):
    """A Caffe child process ended with an error (a failed CHECK, a signal)."""


class TrainingDiverged(StepFailed):
    """The training loss became NaN or infinite."""


class RunDamaged(BadInput):
    """A finished output of a run was changed from outside (named): only --restart can go on."""


class RunLocked(PytrimError):
    """Another pytrim process is working in the same output folder."""


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
    errno.EXDEV,
}


def user_message(exc: BaseException) -> str | None:
    """The one-line message for a problem the user can act on, or None for a bug."""
    if isinstance(exc, PytrimError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in USER_ERRNOS:
        name = str(exc.filename or "").removesuffix(".partial")  # name the output, not its temporary
        return f"{exc.strerror}{': ' + name if name else ''}"
    return None
