"""Presentation for ``duro objects``: aligned tables, JSON, times, sizes, and a progress line on
stderr. Nothing here reads or writes data."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from ..errors import InvalidInputError

__all__ = ["Progress", "print_table", "print_json", "format_ms", "format_size", "parse_time", "jsonable",
           "cell"]


def format_ms(ms: int | None) -> str:
    """Epoch milliseconds as ``2026-11-27T10:03:00.123Z`` (UTC); empty for None."""
    if ms is None:
        return ""
    t = dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def format_size(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


_RELATIVE = re.compile(r"-((?:\d+(?:\.\d+)?[smhd])+)")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_time(text: str, *, now_ms: int | None = None) -> int:
    """``--at`` values: ISO-8601 (``2026-11-27T10:03:00Z``; no zone means UTC), epoch milliseconds
    (``1795773780000``), or a time ago (``-15m``, ``-1h``, ``-1h30m``, ``-2d``, ``-90s``).
    Returns epoch milliseconds."""
    text = text.strip()
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if text.isdigit():
        return int(text)
    m = _RELATIVE.fullmatch(text)
    if m:
        total = 0.0
        for amount, unit in re.findall(r"(\d+(?:\.\d+)?)([smhd])", m.group(1)):
            total += float(amount) * _UNIT_MS[unit]
        return now - int(total)
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(
            f"cannot read the time {text!r}: use ISO-8601 (2026-11-27T10:03:00Z), epoch milliseconds "
            "(1795773780000) or a time ago (-15m, -1h, -2d)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp() * 1000)


def jsonable(value: Any) -> Any:
    """A SQLite value for JSON: blobs become ``{"$base64": "..."}``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$base64": base64.b64encode(bytes(value)).decode()}
    return value


def cell(value: Any) -> str:
    """A SQLite value for a table cell."""
    if value is None:
        return "NULL"
    if isinstance(value, (bytes, bytearray, memoryview)):
        b = bytes(value)
        return "x'" + b[:32].hex() + ("…'" if len(b) > 32 else "'")
    text = str(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= 80 else text[:79] + "…"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, out: TextIO | None = None,
                right: Sequence[int] = ()) -> None:
    """Columns aligned with two spaces between them; ``right`` lists right-aligned columns."""
    out = out or sys.stdout
    text_rows = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)]
        return "  ".join(parts).rstrip()

    out.write(line(headers) + "\n")
    for row in text_rows:
        out.write(line(row) + "\n")


def print_json(value: Any, *, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    json.dump(value, out, indent=2, default=jsonable, ensure_ascii=False)
    out.write("\n")


class Progress:
    """A one-line progress bar on stderr, shown only on a terminal and only once the work has
    taken longer than ``delay`` seconds, redrawn at most ten times a second.

        with Progress("exporting", unit="pages") as p:
            p.update(done, total)
    """

    def __init__(self, label: str, *, unit: str = "", stream: TextIO | None = None,
                 enabled: bool | None = None, delay: float = 0.5) -> None:
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.delay = delay
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False

    def update(self, done: int, total: int | None = None) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._start < self.delay or (now - self._last_draw < 0.1 and done != total):
            return
        self._last_draw = now
        if total:
            frac = min(max(done / total, 0.0), 1.0)
            filled = int(frac * 30)
            bar = "#" * filled + "-" * (30 - filled)
            text = f"{self.label} [{bar}] {frac * 100:5.1f}% {done}/{total} {self.unit}"
        else:
            text = f"{self.label} {done} {self.unit}"
        self.stream.write("\r" + text.rstrip() + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
