#!/usr/bin/env python3
"""Benchmark: APoZ statistics collection vs a bare forward pass, same net, same images.

Both are timed in one run on the same Net object: B batches of forward() alone, and B
batches of forward() + the zero counting that tools/collect.py does, alternating, repeated
--repeats times (after 5 warm-up batches); the best time of each is kept. Prints the numbers and writes
{"ratio": collect/forward, ...} to --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pytrim.cli import run
from pytrim.collect import ZeroCounter, collect_targets, load_net
from pytrim.evaluate import find_test_data
from pytrim.protoutil import read_net
from pytrim.upgrade import current_format


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", type=Path, required=True, help="train_val prototxt with a TEST Data layer")
    parser.add_argument("--weights", type=Path, required=True, help="caffemodel")
    parser.add_argument("--batches", type=int, default=20, help="batches per timing (default 20)")
    parser.add_argument("--repeats", type=int, default=7, help="timings of each kind (default 7)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/apoz_overhead.json"))
    args = parser.parse_args(argv)
    args.net, args.weights = current_format(args.net, "net"), current_format(args.weights, "weights")
    net_param = read_net(args.net)
    batch = find_test_data(net_param)[0].data_param.batch_size
    targets = collect_targets(net_param)
    net = load_net(args.net, args.weights)
    for _ in range(5):  # warm up: data prefetch, page cache, allocations, BLAS threads
        net.forward()

    def bare() -> float:
        start = time.perf_counter()
        for _ in range(args.batches):
            net.forward()
        return time.perf_counter() - start

    def collecting() -> float:
        counter = ZeroCounter(net, targets)
        start = time.perf_counter()
        for _ in range(args.batches):
            net.forward()
            counter.update(batch)
        return time.perf_counter() - start

    forward_times, collect_times = [], []
    for _ in range(args.repeats):
        forward_times.append(bare())
        collect_times.append(collecting())
    images = args.batches * batch
    result = {
        "ratio": min(collect_times) / min(forward_times),
        "forward_seconds": min(forward_times),
        "collect_seconds": min(collect_times),
        "images": images,
        "layers": list(targets),
        "net": str(args.net),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"bare forward: {images / result['forward_seconds']:.0f} images/s; "
        f"with APoZ counting: {images / result['collect_seconds']:.0f} images/s; "
        f"ratio {result['ratio']:.3f} ({', '.join(targets)}): {args.out}"
    )
    return 0


if __name__ == "__main__":
    run(main)
