"""Find the Caffe that `make caffe` built: pycaffe and Caffe's command-line tools.

`make caffe` exposes the build in the project's virtual environment: a .pth file makes
`import caffe` work, and wrappers in .venv/bin run Caffe's tools. Everything in pytrim that
needs Caffe goes through here, so a missing build gives one clear message.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from pytrim.core.errors import BadInput, CaffeNotFound

# glog reads GLOG_minloglevel once, when libcaffe is loaded (by `import caffe` or by
# caffe.proto): hide Caffe's INFO lines in this process unless the user asked for them.
# Children (caffe train) get their own setting (caffe_child_env).
os.environ.setdefault("GLOG_minloglevel", "2")


def caffe_child_env() -> dict[str, str | None]:
    """Environment for Caffe's own tools run as children: glog to stderr (not to files under
    /tmp), all levels (their logs are kept and read)."""
    return {"GLOG_logtostderr": "1", "GLOG_minloglevel": None}


HOW_TO_BUILD = "run `make caffe` (it builds Caffe from source and exposes it in .venv)"


def cache_root() -> Path:
    """pytrim's cache (Caffe builds, upgraded files, net probes): PYTRIM_CACHE, else
    $XDG_CACHE_HOME/pytrim (~/.cache/pytrim)."""
    root = os.environ.get("PYTRIM_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pytrim"
    return Path(root)


def caffe_tool(name: str) -> str:
    """Path of one of Caffe's command-line tools (`caffe`, `upgrade_net_proto_text`, ...)."""
    candidate = Path(sys.prefix) / "bin" / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise CaffeNotFound(f"Caffe's `{name}` tool is not installed: {HOW_TO_BUILD}")


def gpu_devices() -> list[int]:
    """The GPUs to use, from PYTRIM_GPU ("0", or "0,1,2,3" for `caffe train` on several), each
    checked to exist, in a CUDA build; [] for the CPU."""
    value = os.environ.get("PYTRIM_GPU", "").strip()
    if not value or value.lower() in ("cpu", "none", "-1"):
        return []
    parts = [part.strip() for part in value.split(",")]
    if not all(part.isdigit() for part in parts) or len(set(parts)) != len(parts):
        raise BadInput(f"PYTRIM_GPU must be device ids such as 0 or 0,1,2,3, not {value!r}")
    devices, count = [int(part) for part in parts], gpu_count()
    missing = [device for device in devices if device >= count]
    if missing:
        raise BadInput(f"PYTRIM_GPU={value}: there is no GPU {missing[0]} (the driver shows {count})")
    if cpu_only_build():
        raise BadInput(f"PYTRIM_GPU={value}, but this Caffe is a CPU build: run `make caffe CUDA=1`")
    return devices


def gpu_count() -> int:
    """GPUs the NVIDIA driver shows (a folder each in /proc/driver/nvidia/gpus), as many as
    CUDA_VISIBLE_DEVICES leaves visible."""
    folder = Path("/proc/driver/nvidia/gpus")
    count = len(list(folder.iterdir())) if folder.is_dir() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v for v in visible.split(",") if v.strip()]
        count = min(count, len(ids) if "-1" not in ids else ids.index("-1"))
    return count


def cpu_only_build() -> bool:
    """Whether the Caffe that `make caffe` exposed in this environment is a CPU build."""
    marker = Path(sys.prefix) / "caffe-build"
    return marker.is_file() and Path(marker.read_text().strip()).name.startswith("cpu-")


def gpu_device() -> int | None:
    """The device pycaffe runs on: the first of PYTRIM_GPU, or None for the CPU."""
    devices = gpu_devices()
    return devices[0] if devices else None


def gpu_flag() -> list[str]:
    """`caffe train`'s --gpu option: every device of PYTRIM_GPU (Caffe trains on several of
    one machine through NCCL, splitting each batch among them)."""
    devices = gpu_devices()
    return [f"--gpu={','.join(map(str, devices))}"] if devices else []


def load_caffe() -> ModuleType:
    """Import pycaffe, in GPU mode on device PYTRIM_GPU if set, else in CPU mode."""
    try:
        import caffe
    except ImportError as exc:
        raise CaffeNotFound(f"pycaffe cannot be imported ({exc}): {HOW_TO_BUILD}") from exc
    if PB2 in sys.modules and not hasattr(caffe.proto, "caffe_pb2"):
        caffe.proto.caffe_pb2 = sys.modules[PB2]  # loaded before the package (see caffe_pb2)
    device = gpu_device()
    if device is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(device)
        caffe.set_mode_gpu()
    return caffe


PB2 = "caffe.proto.caffe_pb2"


def caffe_pb2() -> ModuleType:
    """Caffe's protobuf messages (NetParameter, SolverParameter, Datum, ...).

    Loaded from pycaffe's caffe/proto/caffe_pb2.py without running caffe/__init__.py, which
    loads libcaffe and its libraries (about 90 MB of memory that cutting and reading files
    do not need). It is registered under its own name, so a later `import caffe` uses it
    instead of registering Caffe's messages twice.
    """
    if PB2 in sys.modules:
        return sys.modules[PB2]
    spec = importlib.util.find_spec("caffe")
    path = Path(spec.submodule_search_locations[0]) / "proto" / "caffe_pb2.py" if spec else None
    if path is None or not path.is_file():
        raise CaffeNotFound(f"caffe.proto cannot be found: {HOW_TO_BUILD}")
    module_spec = importlib.util.spec_from_file_location(PB2, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[PB2] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[PB2]
        raise CaffeNotFound(f"caffe.proto cannot be imported ({exc}): {HOW_TO_BUILD}") from exc
    return module


# OpenBLAS picks its kernels by CPU, so float sums (and every trained weight) would differ
# between machines; children that train, collect or evaluate run with one kernel family
# pinned. Haswell's (AVX2 + FMA) run on every x86-64 CPU of the last decade, Intel and AMD
# alike (OpenBLAS uses them for AMD Zen too); PYTRIM_BLAS_CORETYPE names another, or "auto"
# (OpenBLAS's own choice).
BLAS_CORETYPE = "Haswell"
CORETYPE_FLAGS = {"Haswell": {"avx2", "fma"}, "Zen": {"avx2", "fma"}, "SkylakeX": {"avx512f"},
                  "Sandybridge": {"avx"}, "Nehalem": {"sse4_2"}}  # fmt: skip


def cpu_info() -> dict[str, Any]:
    """The CPU's model name and feature flags (Linux /proc/cpuinfo)."""
    model, flags = "unknown", set()
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return {"model": model, "flags": flags}


def blas_coretype() -> str | None:
    """The OpenBLAS kernel family children are pinned to, or None (OpenBLAS chooses)."""
    wanted = os.environ.get("PYTRIM_BLAS_CORETYPE", BLAS_CORETYPE)
    if not wanted or wanted.lower() == "auto":
        return None
    needs = CORETYPE_FLAGS.get(wanted, set())
    return wanted if needs <= cpu_info()["flags"] else None


def blas_env(threads: int = 1) -> dict[str, str | None]:
    """Environment for a child that computes: BLAS threads and the pinned kernel family."""
    coretype = blas_coretype()
    count = str(max(1, threads))
    return {"OPENBLAS_NUM_THREADS": count, "OMP_NUM_THREADS": count, "OPENBLAS_CORETYPE": coretype}


def blas_config() -> dict[str, Any]:
    """What this process computes with: OpenBLAS's kernel family and threads, and the CPU
    (recorded in every report)."""
    import ctypes

    core, threads = "unknown", 0
    try:
        blas = ctypes.CDLL("libopenblas.so.0")
        blas.openblas_get_corename.restype = ctypes.c_char_p
        core, threads = blas.openblas_get_corename().decode(), int(blas.openblas_get_num_threads())
    except (OSError, AttributeError):
        pass
    return {"blas_core": core, "blas_threads": threads, "cpu": cpu_info()["model"], "cores": os.cpu_count()}


def pinned_machine() -> dict[str, Any]:
    """What pytrim's children and Ray workers compute with (blas_env: the pinned kernels,
    one thread) and the CPU: recorded in the reports whose numbers come from them."""
    core = blas_coretype() or "auto (OpenBLAS's choice)"
    return {"blas_core": core, "blas_threads": 1, "cpu": cpu_info()["model"], "cores": os.cpu_count()}


def set_blas_threads(threads: int) -> int:
    """Set this process's OpenBLAS threads (libopenblas loaded by Caffe); the count it runs with."""
    import ctypes

    try:
        blas = ctypes.CDLL("libopenblas.so.0")
        blas.openblas_set_num_threads(max(1, int(threads)))
        return int(blas.openblas_get_num_threads())
    except (OSError, AttributeError):
        return 0
