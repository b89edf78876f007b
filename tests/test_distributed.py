"""Ray: statistics and evaluation split into shards and merged exactly, a worker killed and
retried, a two-node cluster, a sweep with a failing task, bad addresses; and PYTRIM_GPU's
--gpu flag for several devices.

The single-process references run as children with one BLAS thread, as every Ray worker
does: OpenBLAS's multi-threaded GEMM adds in another order, which changes float sums in
their last bits (pytrim.scale.cluster says so)."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, files_under, pytrim
from test_criteria import tiny_setup

from pytrim.caffeio import env as caffe_env
from pytrim.caffeio.env import caffe_pb2
from pytrim.caffeio.lmdb import write_datums as write_lmdb
from pytrim.caffeio.netcheck import load_net
from pytrim.caffeio.proto import read_net
from pytrim.core.errors import BadInput, StepFailed
from pytrim.experiments.sweep import run_comparison
from pytrim.experiments.sweep_tasks import Settings, Task
from pytrim.feeds.image import Transform
from pytrim.feeds.source import Feeder, Records, data_source
from pytrim.scale.cluster import connected, run_remote, session, single_threaded, worker_env
from pytrim.scale.shards import OrderedSum, lmdb_data_layer, merge, run_shard, shard_jobs, shard_ranges
from pytrim.stats.collect import apoz_pass, collect
from pytrim.stats.evaluate import evaluate, hits_pass
from pytrim.stats.layer_data import collect_layer_data
from pytrim.stats.statsfile import save_stats

ONE_THREAD = {**os.environ, **worker_env()}  # what Ray workers compute with: one thread, pinned kernels


def h5_arrays(path: Path) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, item: arrays.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None)
    return arrays


def assert_same_arrays(one: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> None:
    assert one.keys() == other.keys() and len(one) >= 4
    for key, array in one.items():
        assert np.array_equal(array, other[key]), key  # equal, not close


def reference_stats(small_net: dict[str, Path], out: Path) -> dict[str, np.ndarray]:
    result = pytrim("collect", "--net", small_net["net"], "--weights", small_net["weights"], "--out", out,
                    "--keep-means", "--quiet", env=ONE_THREAD)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return h5_arrays(out)


@pytest.fixture
def local_ray():
    """A local Ray with three worker slots, started by the test (pytrim uses it as it is)."""
    import ray

    with single_threaded():
        ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def test_ordered_sums_do_not_depend_on_the_split() -> None:
    rng = np.random.default_rng(0)
    terms = [rng.standard_normal(7) * 10.0 ** rng.integers(-8, 8) for _ in range(150)]  # > 2 chunks
    whole = OrderedSum()
    for term in terms:
        whole.add(term)
    for cuts in ([0, 150], [0, 1, 64, 100, 129, 150], [0, 63, 65, 150]):
        merged = OrderedSum()
        for a, b in itertools.pairwise(cuts):
            part = OrderedSum(a)
            for term in terms[a:b]:
                part.add(term)
            merged.extend(part)
        assert np.array_equal(merged.total(), whole.total())


@pytest.mark.parametrize("transform", ["mean_value: 33 mean_value: 90 mean_value: 7", "mean_file"])
def test_the_shard_feed_gives_caffes_own_input_bits(caffe, transform: str, tmp_path: Path) -> None:
    """Centre crop, mean (values or file) and scale, on colour images: the same float32 inputs
    as Caffe's Data layer computes in the TEST phase."""

    rng = np.random.default_rng(5)
    db = write_lmdb(rng.integers(0, 256, (7, 3, 12, 10), dtype=np.uint8), np.arange(7) % 3, tmp_path / "db", False)
    if transform == "mean_file":
        mean = caffe_pb2().BlobProto(num=1, channels=3, height=12, width=10)
        mean.data.extend(rng.uniform(0, 255, 360).astype(np.float32).tolist())
        (tmp_path / "mean.binaryproto").write_bytes(mean.SerializeToString())
        transform = f'mean_file: "{tmp_path / "mean.binaryproto"}"'
    net = tmp_path / "net.prototxt"
    net.write_text(f'layer {{ name: "d" type: "Data" top: "data" top: "label" include {{ phase: TEST }} '
                   f'transform_param {{ crop_size: 8 scale: 0.3 {transform} }} '
                   f'data_param {{ source: "{db}" batch_size: 7 backend: LMDB }} }}')  # fmt: skip
    caffe_net = caffe.Net(str(net), caffe.TEST)
    caffe_net.forward()
    feeder = Feeder(Records(db), list(range(7)), Transform.of_layer(lmdb_data_layer(read_net(net))))
    fed = caffe.Net(str(net), caffe.TEST)  # only its blobs are used
    feeder.feed(fed, "data", "label", 0, 7)
    assert np.array_equal(fed.blobs["data"].data, caffe_net.blobs["data"].data)
    assert feeder.labels == caffe_net.blobs["label"].data.astype(int).tolist()


def test_shards_merge_into_the_single_process_numbers(small_net: dict[str, Path], local_ray, tmp_path: Path) -> None:
    assert shard_ranges(25, 10, 3) == [(0, 10), (10, 20), (20, 25)]  # the last is shorter than a batch
    net, weights = small_net["net"], small_net["weights"]
    save_stats(collect(net, weights, means=True, workers=3, progress=False), tmp_path / "three.h5")
    assert_same_arrays(reference_stats(small_net, tmp_path / "one.h5"), h5_arrays(tmp_path / "three.h5"))
    # Every statistic the criteria read (Taylor's backward pass included).
    layers = ["conv1", "conv2", "ip1"]
    code = (f"import numpy as np; from pytrim.stats.layer_data import collect_layer_data as c; d = c({str(net)!r}, "
            f"{str(weights)!r}, {layers!r}, taylor=True); np.savez({str(tmp_path / 'one.npz')!r}, "
            "**{f'{n}.{k}': getattr(v, k) for n, v in d.items() for k in ('zeros', 'activation_sum', "
            "'taylor', 'input_abs_mean')})")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], env=ONE_THREAD, cwd=ROOT, check=True)
    one = np.load(tmp_path / "one.npz")
    three = collect_layer_data(net, weights, layers, taylor=True, workers=3)
    for key in one.files:
        name, _, field = key.partition(".")
        assert np.array_equal(one[key], getattr(three[name], field)), key
    # Hit counts.
    done = pytrim("evaluate", "--net", net, "--weights", weights, "--quiet", "--result", tmp_path / "r.json")
    assert done.returncode == 0, done.stderr[-2000:]
    alone, split = json.loads((tmp_path / "r.json").read_text()), evaluate(net, weights, progress=False, workers=3)
    assert (split.top1, split.top5, split.images) == (alone["top1"], alone["top5"], alone["images"])
    assert split.images == 25


def test_a_killed_worker_is_retried(small_net: dict[str, Path], local_ray, tmp_path: Path) -> None:
    marker = tmp_path / "killed"

    def dying(job: Any) -> dict[str, Any]:  # travels to the worker by value
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return run_shard(job)
        os._exit(17)  # the first worker to get here dies, as one killed by the system would

    net, weights = small_net["net"], small_net["weights"]
    data = data_source(read_net(net))
    plan = shard_jobs(apoz_pass, net, weights, data, {"blobs": ["conv1", "relu2"], "folded": {}})
    with session(2, None) as s:
        merged = merge(run_remote(s, dying, plan(s.slots), "APoZ", lambda job: job.label))
    assert marker.exists()  # a worker died on its shard, and the shard ran again
    alone = apoz_pass(load_net(net, weights), data, {"blobs": ["conv1", "relu2"], "folded": {}})
    assert merged["images"] == alone["images"] == 25
    for blob in ("conv1", "relu2"):
        assert np.array_equal(merged["zeros"][blob], alone["zeros"][blob])


def test_a_two_node_cluster(small_net: dict[str, Path], tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    with single_threaded():
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        cluster.add_node(num_cpus=1)
    try:
        cluster.wait_for_nodes()
        stats = collect(small_net["net"], small_net["weights"], means=True, progress=False, address=cluster.address)
    finally:
        cluster.shutdown()
    save_stats(stats, tmp_path / "nodes.h5")
    assert_same_arrays(reference_stats(small_net, tmp_path / "one.h5"), h5_arrays(tmp_path / "nodes.h5"))


def test_a_worker_that_cannot_read_the_weights_names_its_node(small_net: dict[str, Path], local_ray) -> None:
    data = data_source(read_net(small_net["net"]))
    jobs = shard_jobs(hits_pass, small_net["net"], small_net["weights"], data, {"scores": "ip2"})(3)
    jobs[1].weights_sha256 = "0" * 64  # another file at the same path on that node
    jobs[2].source.source = Path("/nonexistent/lmdb")
    with pytest.raises(StepFailed) as failed:
        run_remote(connected(local_ray), run_shard, jobs, "evaluate", lambda job: job.label)
    message = str(failed.value)
    assert "records 10-20 failed on" in message and str(small_net["weights"]) in message and "differ" in message


def test_a_sweep_keeps_going_past_a_failing_task(small_net: dict[str, Path], tmp_path: Path) -> None:
    nets, data = tiny_setup(small_net, tmp_path)
    settings = Settings(budget=10, rounds=2, stats_images=20, select_every=5, seeds=(0,), verify_tol=-1.0)
    tasks = [Task("small", "l1", 0.5, 0), Task("small", "magnitude", 1.0, 0)]  # l1's cut cannot verify
    with pytest.raises(StepFailed, match="1 of 2 tasks failed"):
        run_comparison(nets, data, tasks, settings, tmp_path / "cmp", workers=2, log=lambda line: None)
    report = json.loads((tmp_path / "cmp/report.json").read_text())
    assert [e["criterion"] for e in report["entries"]] == ["magnitude"]
    (failed,) = report["failed"]
    assert failed["task"] == "small/l1/0.5/seed0" and "does not verify" in failed["error"] and failed["node"]
    assert (tmp_path / "cmp/small/magnitude/1/seed0/result.json").is_file()


def test_an_unreachable_cluster_fails_fast(small_net: dict[str, Path], tmp_path: Path) -> None:
    import socket

    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    out, port = tmp_path / "out", silent.getsockname()[1]
    cases = (("127.0.0.1:9", "cannot be reached"), ("no-port", "expected HOST:PORT"),
             (f"127.0.0.1:{port}", "cannot join the Ray cluster"))  # fmt: skip
    with silent:
        for address, needle in cases:
            start = time.monotonic()
            result = pytrim("collect", "--net", small_net["net"], "--weights", small_net["weights"], "--out",
                            out / "s.h5", "--ray-address", address)  # fmt: skip
            assert time.monotonic() - start < 30
            assert_one_line_error(result, address, needle)
    assert files_under(out) == []


def test_the_gpu_flag_names_every_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caffe_env, "gpu_count", lambda: 4)
    monkeypatch.setattr(caffe_env, "cpu_only_build", lambda: False)
    for value, flag, first in (("0,1,2,3", ["--gpu=0,1,2,3"], 0), ("2", ["--gpu=2"], 2), ("", [], None)):
        monkeypatch.setenv("PYTRIM_GPU", value)
        assert (caffe_env.gpu_flag(), caffe_env.gpu_device()) == (flag, first)
    for bad in ("0,0", "1;2", "4"):
        monkeypatch.setenv("PYTRIM_GPU", bad)
        with pytest.raises(BadInput, match="PYTRIM_GPU"):
            caffe_env.gpu_flag()


def test_a_missing_gpu_fails_before_training(small_net: dict[str, Path], tmp_path: Path) -> None:
    nets, _ = tiny_setup(small_net, tmp_path)
    out = tmp_path / "trained"
    result = pytrim("train", "--solver", nets["small"].finetune_solver, "--out", out / "t.caffemodel",
                    env={**os.environ, "PYTRIM_GPU": "0,7"})  # fmt: skip
    assert_one_line_error(result, "PYTRIM_GPU=0,7", "no GPU")
    assert files_under(out) == []


def test_bench_scale_times_one_pass_everywhere(small_net: dict[str, Path], tmp_path: Path) -> None:
    """bench-scale runs the same shard pass in one process and on 1 and 2 Ray workers, each on
    one BLAS thread, with start-up apart; the counts agree (structure only, not speed)."""
    out = tmp_path / "scale.json"
    done = pytrim("bench-scale", "--net", small_net["net"], "--weights", small_net["weights"], "--no-sweep",
                  "--repeats", "1", "--out", out)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["identical_counts"] is True and result["images"] == 25
    assert result["in_process_blas"]["threads"] == 1
    assert result["in_process_blas"]["core"] == (caffe_env.blas_coretype() or result["in_process_blas"]["core"])
    for key in ("in_process_seconds", "ray_1_worker_seconds", "ray_2_workers_seconds"):
        assert math.isfinite(result[key]) and result[key] > 0
    assert set(result["ray_start_and_first_run_seconds"]) == {"1", "2"}
