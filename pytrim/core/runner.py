"""The one way pytrim runs a child process: Caffe's tools, and pytrim's own steps.

Caffe ends the whole process on a failed CHECK, so everything that may abort runs as a
child: its output streams to a log file (and, line by line, to an optional callback that
drives a progress bar or stops the child by raising), a timeout kills it, a failure raises
one error carrying the decisive line (pytrim's `error:` line or glog's `Check failed`) and
the last lines of the log, and a result comes back as JSON in a file, never parsed from the
log. Wall time and peak resident memory (os.wait4) are measured for every child, and a child
dies with the process that started it.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytrim.core.errors import StepFailed
from pytrim.core.files import read_json

GLOG_FATAL = re.compile(r"^F\d{4,8} [\d:.]+\s+\d+ \S+\] (.*)")  # glog 0.6 puts the year in: F20261122


@dataclass
class ChildResult:
    """What a finished child left: its JSON result (if it wrote one), time and memory."""

    seconds: float
    peak_rss_mb: float
    log: Path
    result: dict[str, Any] = field(default_factory=dict)


def decisive_line(lines: list[str]) -> str | None:
    """The line that says why a child failed: pytrim's `error:` line, else glog's fatal line."""
    for line in reversed(lines):
        if line.startswith("error: "):
            return line[len("error: ") :]
    for line in lines:
        match = GLOG_FATAL.match(line)
        if match:
            return match.group(1)
    return None


try:  # looked up once, before any fork: the child then calls one C function and nothing else
    _PRCTL = ctypes.CDLL("libc.so.6").prctl
except (OSError, AttributeError):
    _PRCTL = None


def die_with_parent() -> None:
    """In the child, before it runs: be killed when the process that started it dies (Linux's
    PR_SET_PDEATHSIG), so that a killed run leaves no orphan writing into its folder."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1


def child_env(extra: dict[str, str | None] | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _failure(
    what: str, code: int | None, timed_out: float | None, tail: list[str], log: Path
) -> tuple[str, str | None]:
    if timed_out:
        how = f"timed out after {timed_out:g} s"
    elif code is not None and code < 0:
        how = f"killed by signal {signal.Signals(-code).name}"
    else:
        how = f"exit code {code}"
    reason = decisive_line(tail)
    head = f"{what} failed ({how}){': ' + reason if reason else ''}; log: {log}"
    return head + "".join(f"\n  {line}" for line in tail[-8:]), reason


def follow(child: subprocess.Popen, out: Any, tail: deque[str], on_line: Callable[[str], None] | None) -> None:
    """Copy the child's output to the log line by line (keeping its tail, calling `on_line`);
    the child is killed if this is interrupted."""
    try:
        assert child.stdout is not None
        for line in child.stdout:
            out.write(line)
            tail.append(line.rstrip("\n"))
            if on_line is not None:
                on_line(line)
    except BaseException:
        child.kill()
        child.wait()
        raise


def run_child(
    args: list[str],
    log: Path,
    what: str,
    on_line: Callable[[str], None] | None = None,
    timeout: float | None = None,
    env: dict[str, str | None] | None = None,
    error: type[StepFailed] = StepFailed,
    cwd: str | Path | None = None,
) -> ChildResult:
    """Run `args`, logging to `log`; raise `error` naming `what` if it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=40)
    start = time.monotonic()
    timer = None
    with log.open("w", buffering=1) as out:  # line-buffered: the log can be followed live
        child = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=child_env(env),
            cwd=cwd,
            bufsize=1,
            # It takes no lock and imports nothing, so children started from threads are safe.
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )
        if timeout:
            timer = threading.Timer(timeout, child.kill)
            timer.start()
        try:
            follow(child, out, tail, on_line)
        finally:
            if timer is not None:
                timer.cancel()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = code = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - start
    if code != 0:
        timed_out = timeout if timeout and seconds >= timeout else None
        raise error(*_failure(what, code, timed_out, list(tail), log))
    return ChildResult(round(seconds, 2), round(usage.ru_maxrss / 1024, 1), log)


def run_step(
    command: str,
    args: list[str],
    log: Path,
    what: str | None = None,
    timeout: float | None = None,
    env: dict[str, str | None] | None = None,
) -> ChildResult:
    """Run pytrim's own command `python -m pytrim <command> ... --result FILE` as a child and
    return what it wrote to FILE (the command's JSON result); `env` adds to its environment."""
    with tempfile.TemporaryDirectory(prefix="pytrim-") as tmp:
        result_file = Path(tmp) / "result.json"
        done = run_child(
            [sys.executable, "-m", "pytrim", command, *args, "--result", str(result_file)],
            log,
            what or command,
            timeout=timeout,
            env={"GLOG_minloglevel": "2", **(env or {})},
        )
        if not result_file.is_file():
            raise StepFailed(f"{what or command} wrote no result (log: {log})")
        done.result = read_json(result_file, f"result of {command}")
    return done
