"""Build a net in Caffe (in this process) and report every blob and parameter shape as JSON.

Other steps run this as a child process before they build a net themselves: a net Caffe
cannot build aborts only this child, and its reason becomes one error line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pytrim.caffeio.netcheck import probe_main_result


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--net", type=Path, required=True, help="prototxt")
    p.add_argument("--phase", choices=["TEST", "TRAIN"], default="TEST", help="phase to build (default TEST)")


def execute(args: argparse.Namespace) -> dict[str, Any]:
    result = probe_main_result(str(args.net), args.phase)
    if not args.quiet:
        print(json.dumps(result, indent=1))
    return result
