"""Build a net in Caffe (in this process) and report every blob and parameter shape as JSON.

Other steps run this as a child process before they build a net themselves: a net Caffe
cannot build aborts only this child, and its reason becomes one error line.
"""

from __future__ import annotations

import json
from pathlib import Path

from pytrim.cli import add_common, finish, parser


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--net", type=Path, required=True, help="prototxt")
    p.add_argument("--phase", choices=["TEST", "TRAIN"], default="TEST", help="phase to build (default TEST)")
    add_common(p)
    args = p.parse_args(argv)
    from pytrim.netcheck import probe_main_result

    result = probe_main_result(str(args.net), args.phase)
    finish(args, result)
    if not args.quiet:
        print(json.dumps(result, indent=1))
    return 0
