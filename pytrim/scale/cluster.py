"""Work spread over Ray workers: the shards of a statistics pass or an evaluation, and the
independent tasks of a sweep.

`--workers N` starts a local Ray with N worker slots (stopped at the end); `--ray-address
ADDR` (or RAY_ADDRESS) joins an existing cluster (`ray start --head` / `ray start
--address`). Without either, pytrim runs in its own process and never imports Ray. Every
worker runs with one BLAS thread. A worker that dies is retried on its shard or task (Ray's
`max_retries`); an error inside a worker comes back with the node it ran on and fails the
step with one line naming both.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pytrim.caffeio.env import blas_env
from pytrim.core.errors import BadInput, StepFailed, user_message
from pytrim.scale.shards import run_shard

RETRIES = 2  # a worker that dies is retried this many times
CONNECT_TIMEOUT = 10.0  # seconds to reach a cluster's head before giving up


def worker_env() -> dict[str, str]:
    """What Ray workers compute with: one BLAS thread and the kernels pytrim's children use
    (pytrim.caffeio.env.blas_env), so a sharded pass gives a single process's numbers."""
    pinned = {key: value for key, value in blas_env(1).items() if value is not None}
    return pinned | {"MKL_NUM_THREADS": "1"}


# Joining a cluster: one attempt with short waits (about 10 s) instead of Ray's 20 attempts
# of about 41 s each when the address answers but is not a Ray head.
FAST_CONNECT = {
    "RAY_gcs_server_port_wait_time_s": "1",
    "RAY_py_gcs_connect_timeout_s": "5",
    "RAY_gcs_rpc_server_connect_timeout_s": "2",
}
# A private local Ray: no token file in ~/.ray (token authentication is Ray 2.60's default),
# no usage statistics.
PRIVATE = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


@dataclass
class Session:
    """A connected Ray, the number of worker slots (CPUs) and the GPUs it offers."""

    ray: Any
    slots: int
    gpus: int = 0


def cluster_address(address: str | None) -> str | None:
    """--ray-address, else RAY_ADDRESS, else None (a local Ray)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def wanted(workers: int | None, address: str | None) -> bool:
    """Whether to run on Ray: --workers, --ray-address or RAY_ADDRESS given."""
    if workers is not None and workers < 1:
        raise BadInput(f"--workers must be at least 1, not {workers}")
    return bool(workers or cluster_address(address))


def reachable(address: str) -> None:
    """Fail fast (one line) when a cluster's head cannot be reached."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise BadInput(f"--ray-address {address!r}: expected HOST:PORT (the head's GCS address, e.g. 10.0.0.1:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        raise BadInput(f"--ray-address {address}: the Ray head cannot be reached ({exc})") from None


def import_ray(settings: dict[str, str]) -> Any:
    """Ray, with `settings` in the environment unless the user set them (Ray's core reads
    them when it is loaded, or when its config is initialized again)."""
    for key, value in settings.items():
        os.environ.setdefault(key, value)
    try:
        import ray
    except ImportError as exc:
        raise BadInput(f"Ray is not installed ({exc}): make venv installs it (requirements.txt)") from None
    with contextlib.suppress(Exception):  # internal: re-read RAY_* when Ray was imported before
        ray._raylet.Config.initialize("")
    return ray


def join(ray: Any, address: str, options: dict[str, Any]) -> None:
    """Connect to the cluster at `address`, or one line saying why not."""
    try:
        ray.init(address=address, runtime_env={"env_vars": worker_env()}, **options)
    except (ConnectionError, RuntimeError, TimeoutError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"--ray-address {address}: cannot join the Ray cluster ({reason})") from None


@contextlib.contextmanager
def session(workers: int | None, address: str | None) -> Iterator[Session]:
    """A local Ray with `workers` slots, or the cluster at `address`, shut down at the end; a
    Ray this process has already started (a notebook, a test) is used as it is."""
    address = cluster_address(address)
    if address:
        reachable(address)
    ray = import_ray(FAST_CONNECT if address else PRIVATE)
    if ray.is_initialized():
        yield connected(ray)
        return
    options = {"log_to_driver": False, "logging_level": "ERROR", "configure_logging": True}
    if address:
        join(ray, address, options)
    else:
        with single_threaded():  # local workers inherit the environment Ray starts with
            # "local": a Ray of its own even when another one runs on this machine
            ray.init(address="local", num_cpus=max(1, workers or 1), include_dashboard=False, **options)
    try:
        yield connected(ray)
    finally:
        ray.shutdown()


@contextlib.contextmanager
def shared_local(workers: int | None) -> Iterator[str | None]:
    """One local Ray with `workers` slots for a whole run, its address for the run's child
    processes to join (--ray-address) instead of each starting a Ray of its own; None
    without workers."""
    if not workers:
        yield None
        return
    with session(workers, None) as s:
        yield s.ray.get_runtime_context().gcs_address


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """worker_env() in this process's environment while Ray starts, then as it was."""
    env = worker_env()
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def connected(ray: Any) -> Session:
    resources = ray.cluster_resources()
    return Session(ray, max(1, int(resources.get("CPU", 1))), int(resources.get("GPU", 0)))


def where() -> str:
    """This worker's node, for error messages."""
    return f"{socket.gethostname()} ({socket.gethostbyname(socket.gethostname())})"


def guarded(fn: Callable[[Any], Any], job: Any) -> dict[str, Any]:
    """Run `fn(job)` in a worker: its result, or its error and the node it ran on (an error
    is not retried: a missing file stays missing; a dead worker is)."""
    try:
        return {"result": fn(job), "node": where()}
    except Exception as exc:
        return {"error": user_message(exc) or f"{type(exc).__name__}: {exc}", "node": where()}


def run_remote(session: Session, fn: Callable[[Any], Any], jobs: list[Any], what: str, label: Callable) -> list:
    """`fn` over the jobs on the workers, results in the jobs' order; the first failure
    (after the retries of dead workers) fails the step naming the node and the error."""
    ray = session.ray
    remote = ray.remote(num_cpus=1, max_retries=RETRIES)(guarded)
    refs = [remote.remote(fn, job) for job in jobs]
    results = []
    for job, ref in zip(jobs, refs, strict=True):
        try:
            outcome = ray.get(ref)
        except ray.exceptions.RayError as exc:
            raise StepFailed(f"{what}: {label(job)} failed {RETRIES + 1} times (its worker died): {exc}") from None
        if "error" in outcome:
            raise StepFailed(f"{what}: {label(job)} failed on {outcome['node']}: {outcome['error']}")
        results.append(outcome["result"])
    return results


def as_completed(session: Session, fn: Callable[[Any], Any], jobs: list[Any], gpu: bool) -> Iterator[tuple]:
    """(job, outcome) as each job ends on the workers: the outcome is guarded()'s dict, with
    "error" for a job that failed or whose worker kept dying. `gpu`: one GPU per job."""
    ray = session.ray
    remote = ray.remote(num_cpus=1, num_gpus=1 if gpu else 0, max_retries=RETRIES)(guarded)
    pending = {remote.remote(fn, job): job for job in jobs}
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(ref)
        try:
            outcome = ray.get(ref)
        except ray.exceptions.RayError as exc:
            outcome = {"error": f"its worker died {RETRIES + 1} times ({type(exc).__name__})", "node": "?"}
        yield job, outcome


def run_shards(make_jobs: Callable[[int], list[Any]], workers: int | None, address: str | None, what: str) -> list:
    """Shard jobs (pytrim.scale.shards.ShardJob), as many as the workers offer slots, run on Ray."""
    with session(workers, address) as s:
        jobs = make_jobs(s.slots)
        return run_remote(s, run_shard, jobs, what, lambda job: job.label)
