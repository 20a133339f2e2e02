"""``duro objects`` argument parsing: --at times, "-15m" not taken for an option, and every example
the help prints accepted as printed."""

from __future__ import annotations

import pathlib
import re
import shlex

import pytest

from duro.cli._output import format_ms, format_size, parse_time
from duro.cli.main import build_parser
from duro.errors import InvalidInputError
from duro.storage import maintenance
from duro.storage.journal import parse_bookmark

NOW = 1_795_773_780_000  # 2026-11-27T10:03:00Z


@pytest.mark.parametrize("text, expected", [
    ("2026-11-27T10:03:00Z", NOW),
    ("2026-11-27T10:03:00", NOW),  # no zone: UTC
    ("2026-11-27T11:03:00+01:00", NOW),
    (str(NOW), NOW),
    ("-15m", NOW - 15 * 60_000),
    ("-1h", NOW - 3_600_000),
    ("-1h30m", NOW - 5_400_000),
    ("-2d", NOW - 2 * 86_400_000),
    ("-90s", NOW - 90_000),
])
def test_parse_time(text, expected):
    assert parse_time(text, now_ms=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "-15x", "15m ago", ""])
def test_parse_time_refuses_what_it_cannot_read(text):
    with pytest.raises(InvalidInputError, match="cannot read the time"):
        parse_time(text, now_ms=NOW)


def test_a_relative_time_is_not_taken_for_an_option():
    args = build_parser().parse_args(["objects", "restore", "apples", "--at", "-15m"])
    assert args.at == "-15m" and args.object == "apples"
    args = build_parser().parse_args(["objects", "branch", "apples", "--at", "-1h", "--to", "old"])
    assert args.at == "-1h" and args.to == "old"


def test_formatting():
    assert format_ms(NOW) == "2026-11-27T10:03:00.000Z"
    assert format_ms(None) == ""
    assert format_size(512) == "512 B" and format_size(20 * 1024) == "20.0 KiB"


# ---- the examples in the help parse as printed ----------------------------------------------------

SUBCOMMANDS = ("list", "show", "sql", "export", "import", "restore", "branch")
DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"


def _help(capsys, *argv):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*argv, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def _example_commands(text):
    """The ``duro objects ...`` command lines under "examples:", each without the explanation
    that follows it after a run of spaces."""
    examples = text.split("examples:\n", 1)[1]
    lines = [re.split(r"\s{2,}", line.strip())[0] for line in examples.splitlines()]
    return [shlex.split(line) for line in lines if line.startswith("duro objects ")]


@pytest.mark.parametrize("where", [(), *((s,) for s in SUBCOMMANDS)], ids=["objects", *SUBCOMMANDS])
def test_every_help_example_is_accepted_as_printed(capsys, where):
    commands = _example_commands(_help(capsys, "objects", *where))
    assert commands, "the help shows no example"
    for argv in commands:
        args = build_parser().parse_args(argv[1:])
        assert args.objects_command == argv[2]
        # The checks the command makes before it touches anything: a bookmark's form, a time.
        if getattr(args, "bookmark", None) is not None:
            maintenance.check_point(args.bookmark, None, None)
        if getattr(args, "at", None) is not None:
            parse_time(args.at)


def test_restore_help_shows_a_bookmark_in_duros_format(capsys):
    commands = _example_commands(_help(capsys, "objects", "restore"))
    bookmarks = [argv[argv.index("--bookmark") + 1] for argv in commands if "--bookmark" in argv]
    assert len(bookmarks) == 1
    assert parse_bookmark(bookmarks[0])  # (seq, ms, tag)


def test_the_bookmarks_in_the_docs_are_in_duros_format():
    found = re.findall(r"--bookmark ([0-9a-f][0-9a-f-]+)", (DOCS / "objects-cli.md").read_text())
    assert len(found) >= 2
    for bookmark in found:
        parse_bookmark(bookmark)
