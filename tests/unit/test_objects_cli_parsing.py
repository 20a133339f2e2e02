"""``duro objects`` argument parsing: --at times, and "-15m" not taken for an option."""

from __future__ import annotations

import pytest

from duro.cli._output import format_ms, format_size, parse_time
from duro.cli.main import build_parser
from duro.errors import InvalidInputError

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
