"""The command line speaks one vocabulary (pytrim/cli/vocabulary.py): every option of every
command is in it with one meaning, and docs/commands.md's table is that vocabulary."""

from __future__ import annotations

from conftest import ROOT, assert_one_line_error, pytrim

from pytrim.cli import COMMANDS, parser_of
from pytrim.cli.vocabulary import VOCABULARY, option_users, table


def test_every_commands_options_are_in_the_vocabulary() -> None:
    users = option_users()
    outside = {option: names for option, names in users.items() if option not in VOCABULARY}
    assert not outside, f"options outside the vocabulary (pytrim/cli/vocabulary.py): {outside}"
    unused = [option for option in VOCABULARY if option not in users]
    assert not unused, f"vocabulary entries no command takes: {unused}"


def test_the_docs_show_the_vocabulary() -> None:
    shown = pytrim("vocabulary")
    assert shown.returncode == 0 and shown.stdout.strip() == table(option_users())
    assert table(option_users()) in (ROOT / "docs/commands.md").read_text(), "docs/commands.md's table is stale"


def test_every_command_has_help_and_the_list_has_every_command() -> None:
    listing = pytrim("--help")
    assert listing.returncode == 0 and all(name in listing.stdout for name in COMMANDS)
    for name in COMMANDS:
        assert parser_of(name).format_help().startswith(f"usage: pytrim {name}")
    unknown = pytrim("frobnicate")
    assert unknown.returncode == 2 and "unknown command 'frobnicate'" in unknown.stderr


def test_an_unknown_net_name_is_one_line_naming_the_known_ones(tmp_path) -> None:
    for command in ("bench-speed", "coverage", "sweep-criteria", "relief", "bench-apoz"):
        extra = ["--net", ROOT / "prototxt/lenet/train_val.prototxt", "--weights", tmp_path / "w.caffemodel"]
        done = pytrim(
            command, "--nets", "resnet51", "--out", tmp_path / command, *(extra if command == "bench-apoz" else [])
        )
        assert_one_line_error(done, "--nets: unknown resnet51 (one of ")
        assert not (tmp_path / command).exists()
