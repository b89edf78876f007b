"""pytrim's command line: one module per command, run through `run_command`.

A command module has a docstring (its --help text), `arguments(parser)` and `execute(args)
-> dict` (its result, written to --result FILE as JSON); it may declare `OUTPUTS` (option
dest -> "file", "folder" or "place"), `outputs(args)` and `inputs(args)` (paths it
computes), `check(args)` (what must hold before anything is written) and `RESUMABLE` (a
failed run keeps its folder, to be resumed). `run_command` guards every path a
command writes before it does any work (pytrim.core.files.OutputGuard: no output is, holds or
lies in an input, the data its nets read included; output folders are empty or the command's
own; what a failed command wrote is removed), and turns the problems a user can act on
(pytrim.core.errors) into one `error:` line and exit code 1; any other exception is a bug
and keeps its traceback.

Layer: the top; it may import every package, and none imports it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import NoReturn

from pytrim.caffeio.netcheck import ALLOW_PYTHON
from pytrim.caffeio.proto import data_sources, listed_folders, read_net, read_solver
from pytrim.core.errors import BadInput, PytrimError, StepFailed, user_message
from pytrim.core.files import OutputGuard, write_json

# command -> (module in pytrim.cli, what it does)
COMMANDS = {
    "collect": ("collect", "APoZ statistics of a net on its TEST data"),
    "choose": ("choose", "the neurons to cut, from statistics"),
    "cut": ("cut", "cut the chosen neurons: new prototxts and caffemodel"),
    "verify": ("verify", "prove a cut against the original with the neurons silenced"),
    "export": ("export", "the net as an ONNX model, verified against Caffe in ONNX Runtime"),
    "evaluate": ("evaluate", "top-1/top-5 on the TEST data"),
    "speed": ("speed", "parameters, MACs and forward time of a net beside another"),
    "train": ("train", "train or fine-tune with Caffe's solver"),
    "train-masked": ("train_masked", "retrain with pruned connections held at zero"),
    "score": ("score", "score neurons with a unit criterion"),
    "trim": ("trim", "the iterated Network Trimming loop from a schedule"),
    "compare": ("compare", "two models side by side: accuracy, size, speed"),
    "sweep-criteria": ("sweep_criteria", "pruning criteria swept on LeNet-5 and LeNet-300-100"),
    "sweep-task": ("sweep_task", "one task of sweep-criteria (run by it in a child process)"),
    "relief": ("relief", "NN Relief iterated as its authors run it, on LeNet-300-100 and LeNet-5"),
    "overlap": ("overlap", "do two samples choose the same neurons?"),
    "bench-apoz": ("bench_apoz", "benchmark: the whole statistics path vs a bare forward pass"),
    "bench-scale": ("bench_scale", "benchmark: statistics and a sweep on 1 and 2 Ray workers"),
    "bench-export": ("bench_export", "benchmark: every zoo and benchmark net exported to ONNX, verified and timed"),
    "bench-speed": ("bench_speed", "benchmark: forward time against MACs of cut model-zoo nets"),
    "bench-peers": ("bench_peers", "benchmark: pytrim and Torch-Pruning on the same nets, data and budget"),
    "coverage": ("coverage", "benchmark: what pytrim can trim in the model-zoo nets (filler weights, full size)"),
    "vgg16": ("vgg16", "the paper's VGG-16 run, and its synthetic stand-in"),
    "synthetic": ("synthetic", "any net end to end on filler weights: coverage, time and memory per step"),
    "prepare-lenet": ("prepare_lenet", "LeNet's data as LMDB"),
    "prepare-imagenet": ("prepare_imagenet", "ImageNet as LMDB for VGG-16"),
    "zoo": ("zoo", "write a public model-zoo net (ResNet-50, GoogLeNet, MobileNet, ...) as prototxt"),
    "probe": ("probe", "build a net in Caffe and report its blob and parameter shapes"),
    "record": ("record", "copy the runs the documentation cites into results/ and regenerate its tables"),
    "vocabulary": ("vocabulary", "every option of every command, with its one meaning (docs/commands.md's table)"),
}
RESULT_HELP = "also write the result as JSON to this file"
BUILDS_NETS = ("--net", "--deploy", "--solver", "--schedule", "--trimmed-net")  # commands that build nets
PYTHON_HELP = "run the code of the net's Python layers (their modules are named before they are imported)"
NET_OPTIONS = ("--net", "--deploy", "--trimmed-net")  # prototxts: the data they read are inputs too


class MissingInputs(BadInput):
    """A run needs files the user must supply; the message lists them (exit code 2)."""


def usage() -> str:
    lines = ["usage: python -m pytrim <command> [options]   (<command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<18} {what}" for name, (_, what) in COMMANDS.items()]
    return "\n".join(lines)


def module_of(name: str) -> ModuleType:
    return importlib.import_module(f"pytrim.cli.{COMMANDS[name][0]}")


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one `error:` line (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} ({self.prog} --help lists the options)\n")


def parser_of(name: str) -> argparse.ArgumentParser:
    """The command's argument parser: its own options, then --result and --quiet."""
    module = module_of(name)
    parser = Parser(
        prog=f"pytrim {name}", description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    module.arguments(parser)
    parser.add_argument("--result", type=Path, help=RESULT_HELP)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    if any(option in parser._option_string_actions for option in BUILDS_NETS):
        parser.add_argument("--allow-python-layers", action="store_true", help=PYTHON_HELP)
    return parser


def path_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Path]:
    """Every option given that names a path: dest -> path."""
    found = {}
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if action.type is Path and value is not None:
            found[action.dest] = Path(value)
    return found


def net_data(path: Path) -> list[Path]:
    """The files a prototxt reads data from, in every phase (none if it cannot be read: the
    command says why)."""
    try:
        return data_sources(read_net(path))
    except PytrimError:
        return []


def solver_nets(path: Path) -> list[Path]:
    """The nets a solver file names (net, train_net, test_net), or none if it is not one."""
    try:
        solver = read_solver(path)
    except PytrimError:
        return []
    return [Path(p) for p in [solver.net, solver.train_net, *solver.test_net] if p]


def read_by(label: str, path: Path) -> dict[str, list[Path]]:
    """What a prototxt given as an input reads: a net's data, or a solver's nets and theirs."""
    nets = solver_nets(path)
    found = {f"the net of {label} {path}": nets} if nets else {}
    for net in [path] if not nets else nets:
        data = net_data(net)
        if data:
            found[f"data read by {label} {path}"] = found.get(f"data read by {label} {path}", []) + data
    return found


def feed_data(args: argparse.Namespace) -> dict[str, list[Path]]:
    """--feed: an image list's images' folders are inputs too."""
    feed = getattr(args, "feed", None)
    if feed is None or not Path(feed).is_file():
        return {}
    root = getattr(args, "feed_root", None) or Path(feed).parent  # as pytrim.feeds.source reads it
    return {f"the images of --feed {feed}": listed_folders(Path(feed), root)}


def guard_of(name: str, parser: argparse.ArgumentParser, args: argparse.Namespace) -> OutputGuard:
    """The outputs of this run, checked against every input (pytrim.core.files.OutputGuard).
    OUTPUTS kinds: "file", "folder" (claimed: empty or this command's), "place" (where the
    command writes the files `outputs(args)` names: neither an input nor claimed)."""
    module = module_of(name)
    kinds = {**getattr(module, "OUTPUTS", {}), "result": "file"}
    paths = {f"--{dest.replace('_', '-')}": (dest, path) for dest, path in path_options(parser, args).items()}
    files = {option: path for option, (dest, path) in paths.items() if kinds.get(dest) == "file"}
    folders = {option: path for option, (dest, path) in paths.items() if kinds.get(dest) == "folder"}
    if hasattr(module, "outputs"):
        more_files, more_folders = module.outputs(args)
        files, folders = files | more_files, folders | more_folders
    written = set(files) | set(folders)
    inputs: dict[str, Path | list[Path] | None] = {
        option: path for option, (dest, path) in paths.items() if dest not in kinds and option not in written
    }
    inputs |= module.inputs(args) if hasattr(module, "inputs") else {}
    for label, path in list(inputs.items()):
        if _is_net(label, path):
            inputs |= read_by(label, Path(path))  # type: ignore[arg-type]
    inputs |= feed_data(args)
    return OutputGuard(name, inputs, files, folders, keep_folders=getattr(module, "RESUMABLE", False))


def _is_net(label: str, path: Path | None) -> bool:
    return path is not None and (label in NET_OPTIONS or Path(path).suffix == ".prototxt") and Path(path).is_file()


def run_command(name: str, argv: list[str]) -> int:
    """Parse, guard the outputs, execute, write --result; the exit code."""
    parser = parser_of(name)
    args = parser.parse_args(argv)
    if getattr(args, "allow_python_layers", False):
        os.environ[ALLOW_PYTHON] = "1"  # the checks before Caffe builds a net, in this process and its children
    module = module_of(name)
    if hasattr(module, "check"):  # arguments checked before any output is claimed
        module.check(args)
    with guard_of(name, parser, args):
        result = module_of(name).execute(args)
        if args.result:
            write_json(args.result, result)
    return 0


def run(name: str, argv: list[str] | None = None) -> None:
    """Run a command as a process does: `error: ...` and exit 1 (2 for missing inputs) on a
    problem the user can act on."""
    try:
        sys.exit(run_command(name, sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        message = user_message(exc)
        if message is None:
            raise
        print(f"error: {bounded(message)}", file=sys.stderr)
        if isinstance(exc, StepFailed) and getattr(module_of(name), "RESUMABLE", False):
            print("finished steps are kept: run the same command again to resume", file=sys.stderr)
        sys.exit(2 if isinstance(exc, MissingInputs) else 1)


LONGEST = 4000  # characters of an error line: the first offenders are named, not 20,000 of them


def bounded(message: str) -> str:
    """An error message of bounded length (what is cut is counted)."""
    return message if len(message) <= LONGEST else f"{message[:LONGEST]}… ({len(message) - LONGEST} more characters)"


def main() -> None:
    """`python -m pytrim <command> ...`."""
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    command = sys.argv[1]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    run(command, sys.argv[2:])
