"""A net's forward pass where people deploy it, ready to be timed: Caffe (pycaffe, its CPU kernels),
OpenCV's DNN reading the Caffe files themselves, and ONNX Runtime running the exported model.

`forwards` builds, for one runtime, batch size and thread count, one callable per net that runs
one forward pass on a fixed random input (the same input for every net); pytrim.stats.cost times
them interleaved. A runtime that cannot load a net says why instead (a `Refused`), and what
OpenCV computes differently from Caffe is named with the timing (pytrim.export.check.opencv_caveats).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytrim.caffeio.env import load_caffe, set_blas_threads
from pytrim.caffeio.netcheck import probe
from pytrim.caffeio.proto import input_net, read_net, write_text
from pytrim.export.build import translate
from pytrim.export.check import opencv_caveats, session

RUNTIMES = ("caffe", "opencv", "onnxruntime")
TITLES = {"caffe": "Caffe", "opencv": "OpenCV DNN", "onnxruntime": "ONNX Runtime"}


@dataclass
class Refused:
    """A runtime that cannot run a net: why."""

    reason: str


def deploy_form(net: Path, batch: int, path: Path) -> tuple[Path, list[str]]:
    """The net as it is deployed: Input layers of `batch`, no losses or Accuracy; its inputs."""
    shaped = input_net(read_net(net), probe(net).blobs, batch, labels=False)
    inputs = [top for layer in shaped.layer if layer.type == "Input" for top in layer.top]
    return write_text(shaped, path), inputs


def random_input(shape: list[int]) -> np.ndarray:
    return np.random.default_rng(0).random(shape, dtype=np.float32)


def caffe_nets(nets: list[tuple[Path, Path]], batch: int, tmp: Path) -> list[Any]:
    """Each net as a pycaffe Net in its deploy form with its weights, all fed the same input."""
    caffe = load_caffe()
    built = []
    for index, (net, weights) in enumerate(nets):
        path, inputs = deploy_form(net, batch, tmp / f"caffe{index}.prototxt")
        model = caffe.Net(str(path), caffe.TEST)
        model.copy_from(str(weights))
        for number, name in enumerate(inputs):
            shape = list(model.blobs[name].data.shape)
            model.blobs[name].data[...] = random_input(shape) if number == 0 else 0
        built.append(model)
    return built


def caffe_forwards(nets: list[tuple[Path, Path]], batch: int, threads: int, tmp: Path) -> list[Callable[[], Any]]:
    set_blas_threads(threads)
    return [model.forward for model in caffe_nets(nets, batch, tmp)]


def opencv_forwards(nets: list[tuple[Path, Path]], batch: int, threads: int, tmp: Path) -> list[Callable[[], Any]]:
    import cv2

    cv2.setNumThreads(threads)
    built = []
    for index, (net, weights) in enumerate(nets):
        path, inputs = deploy_form(net, batch, tmp / f"opencv{index}.prototxt")
        reader = cv2.dnn.readNetFromCaffe(str(path), str(weights))
        reader.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        shape = [int(d) for d in probe(path).blobs[inputs[0]]]
        reader.setInput(random_input(shape), inputs[0])
        reader.forward()  # OpenCV allocates and fuses layers on the first pass
        built.append(reader.forward)
    return built


def onnx_forwards(nets: list[tuple[Path, Path]], batch: int, threads: int, tmp: Path) -> list[Callable[[], Any]]:
    built = []
    for index, (net, weights) in enumerate(nets):
        path = tmp / f"model{index}.onnx"
        if not path.is_file():  # one export per net serves every batch size and thread count
            exported = translate(net, weights)
            path.write_bytes(exported.model.SerializeToString())
        running = session(path, threads)
        first = running.get_inputs()[0]
        shape = [batch, *(int(d) for d in first.shape[1:])]
        feeds = {first.name: random_input(shape)}
        feeds |= {i.name: np.zeros([batch, *i.shape[1:]], np.float32) for i in running.get_inputs()[1:]}
        built.append(lambda running=running, feeds=feeds: running.run(None, feeds))
    return built


BUILDERS = {"caffe": caffe_forwards, "opencv": opencv_forwards, "onnxruntime": onnx_forwards}


def forwards(runtime: str, nets: list[tuple[Path, Path]], batch: int, threads: int,
             tmp: Path) -> list[Callable[[], Any]] | Refused:  # fmt: skip
    """One forward callable per net in `runtime`, or why the runtime cannot run them."""
    try:
        return BUILDERS[runtime](nets, batch, threads, tmp)
    except Exception as exc:  # a runtime's own error (cv2.error, ORT's) is the reason
        if runtime == "caffe":
            raise
        return Refused(f"{TITLES[runtime]} cannot run the net: {str(exc).strip().splitlines()[-1][:300]}")


def caveats(runtime: str, nets: list[tuple[Path, Path]]) -> list[str]:
    """What a runtime computes differently from Caffe in these nets (OpenCV's ignored settings)."""
    if runtime != "opencv":
        return []
    return list(dict.fromkeys(c for net, _ in nets for c in opencv_caveats(read_net(net))))
