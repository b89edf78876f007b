"""The Caffe built by `make caffe`: pycaffe forward/backward, solver, caffemodel I/O, tools."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import read_model, write_net

from pytrim.caffeio.env import caffe_tool


def tiny_fc(path: Path) -> Path:
    """data (5, 3) -> InnerProduct 4 -> ReLU in place."""
    import caffe
    from caffe import layers as L

    n = caffe.NetSpec()
    n.data = L.Input(shape={"dim": [5, 3]})
    gaussian = {"type": "gaussian", "std": 0.5}
    n.ip = L.InnerProduct(n.data, num_output=4, weight_filler=gaussian, bias_filler=gaussian)
    n.relu = L.ReLU(n.ip, in_place=True)
    return write_net(path, str(n.to_proto()))


def regression(path: Path) -> Path:
    """data (8, 3) -> InnerProduct 2 -> EuclideanLoss against target (8, 2)."""
    import caffe
    from caffe import layers as L

    n = caffe.NetSpec()
    n.data = L.Input(shape={"dim": [8, 3]})
    n.target = L.Input(shape={"dim": [8, 2]})
    n.ip = L.InnerProduct(
        n.data, num_output=2, weight_filler={"type": "gaussian", "std": 0.3}, bias_filler={"value": 0.1}
    )
    n.loss = L.EuclideanLoss(n.ip, n.target)
    proto = n.to_proto()
    proto.force_backward = True
    return write_net(path, str(proto))


def test_forward_matches_numpy(caffe, tmp_path: Path) -> None:
    net = caffe.Net(str(tiny_fc(tmp_path / "tiny.prototxt")), caffe.TEST)
    x = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    net.blobs["data"].data[...] = x
    out = net.forward()["ip"]
    w, b = net.params["ip"][0].data, net.params["ip"][1].data
    assert w.shape == (4, 3) and b.shape == (4,)
    np.testing.assert_allclose(out, np.maximum(x @ w.T + b, 0), rtol=1e-5, atol=1e-6)
    assert (out == 0).any() and (out > 0).any()  # the ReLU really clipped something


def test_backward_matches_analytic_gradient(caffe, tmp_path: Path) -> None:
    net = caffe.Net(str(regression(tmp_path / "reg.prototxt")), caffe.TRAIN)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(8, 3)).astype(np.float32)
    y = rng.normal(size=(8, 2)).astype(np.float32)
    net.blobs["data"].data[...] = x
    net.blobs["target"].data[...] = y
    net.forward()
    net.backward()
    w, b = net.params["ip"][0].data, net.params["ip"][1].data
    residual = x @ w.T + b - y  # EuclideanLoss = sum(residual^2) / (2N)
    np.testing.assert_allclose(float(net.blobs["loss"].data), (residual**2).sum() / 16, rtol=1e-5)
    np.testing.assert_allclose(net.params["ip"][0].diff, residual.T @ x / 8, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.params["ip"][1].diff, residual.sum(axis=0) / 8, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.blobs["data"].diff, residual @ w / 8, rtol=1e-4, atol=1e-6)


def test_solver_steps_lower_the_loss(caffe, tmp_path: Path) -> None:
    net_path = regression(tmp_path / "reg.prototxt")
    solver_path = write_net(
        tmp_path / "solver.prototxt",
        f'net: "{net_path}"\nbase_lr: 0.1\nmomentum: 0.9\nlr_policy: "fixed"\nmax_iter: 100\n'
        "display: 0\nsolver_mode: CPU\nrandom_seed: 7\nsnapshot_after_train: false\n",
    )
    solver = caffe.SGDSolver(str(solver_path))
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 3)).astype(np.float32)
    y = x @ rng.normal(size=(3, 2)).astype(np.float32)
    solver.net.blobs["data"].data[...] = x
    solver.net.blobs["target"].data[...] = y
    solver.net.forward()
    first = float(solver.net.blobs["loss"].data)
    solver.step(50)
    last = float(solver.net.blobs["loss"].data)
    assert solver.iter == 50
    assert last < first * 0.1, (first, last)


def test_caffemodel_write_and_reread_identical(caffe, tmp_path: Path) -> None:
    proto = tiny_fc(tmp_path / "tiny.prototxt")
    net = caffe.Net(str(proto), caffe.TEST)
    model_path = tmp_path / "tiny.caffemodel"
    net.save(str(model_path))
    again = caffe.Net(str(proto), str(model_path), caffe.TEST)
    for name, blobs in net.params.items():
        for original, loaded in zip(blobs, again.params[name], strict=True):
            np.testing.assert_array_equal(original.data, loaded.data)
    # The file itself holds the same numbers, readable without a Net.
    layers = {layer.name: layer for layer in read_model(model_path).layer}
    stored = np.array(layers["ip"].blobs[0].data, dtype=np.float32).reshape(4, 3)
    np.testing.assert_array_equal(stored, net.params["ip"][0].data)


def test_caffe_time_command(tmp_path: Path) -> None:
    proto = tiny_fc(tmp_path / "tiny.prototxt")
    result = subprocess.run(
        [caffe_tool("caffe"), "time", f"--model={proto}", "--iterations=3"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={"GLOG_logtostderr": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Average Forward pass" in result.stderr


def test_upgrade_tools_present() -> None:
    for tool in ("upgrade_net_proto_text", "upgrade_net_proto_binary", "convert_imageset", "compute_image_mean"):
        assert Path(caffe_tool(tool)).is_file()


def test_caffe_cpp_tests_subset() -> None:
    """A quick subset of Caffe's own C++ test suite, on the binary built with pycaffe."""
    build_root = Path((Path(sys.prefix) / "caffe-build").read_text().strip())
    testbin = build_root / "install" / "bin" / "caffe-cpp-tests"
    assert testbin.is_file(), f"{testbin} missing: run make caffe-cpp-tests (make test builds it)"
    result = subprocess.run(
        [str(testbin), "--gtest_filter=*InnerProductLayerTest*:*ConvolutionLayerTest/0.*:*NetTest/0.*"],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=build_root / "build",
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "[  PASSED  ]" in result.stdout and "FAILED" not in result.stdout
