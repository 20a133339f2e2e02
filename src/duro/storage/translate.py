"""Turning apsw exceptions into duro's error tree: the one place where that happens.

Owns the message format Cloudflare uses for SQLite errors (reference §13.3):
``<sqlite message>[ at offset N]: <CODE>[ (extended: <EXTENDED_CODE>)]``, and the choice of class:
``StorageLimitError`` for SQLITE_TOOBIG / SQLITE_FULL, ``CorruptDatabaseError`` for SQLITE_CORRUPT /
SQLITE_NOTADB, ``SqlError`` for the rest.

It must never run SQL or keep state; deciding what a corrupt database means for the object is the
database's job.
"""

from __future__ import annotations

import os

import apsw

from duro.errors import CorruptDatabaseError, SqlError, StorageLimitError

__all__ = ["format_sqlite_message", "translate", "corrupt_error", "CORRUPT_CODES"]

_RESULT_NAMES = apsw.mapping_result_codes
_EXTENDED_NAMES = apsw.mapping_extended_result_codes

CORRUPT_CODES = frozenset({apsw.SQLITE_CORRUPT, apsw.SQLITE_NOTADB})
_LIMIT_CODES = frozenset({apsw.SQLITE_TOOBIG, apsw.SQLITE_FULL})


def _code_name(code: int) -> str:
    return _RESULT_NAMES.get(code) or f"SQLITE_UNKNOWN_ERROR_CODE({code})"


def format_sqlite_message(message: str, result: int, extended: int, offset: int = -1) -> str:
    """Cloudflare's format for a SQLite error."""
    text = message
    if offset >= 0:
        text += f" at offset {offset}"
    text += ": " + _code_name(result)
    if extended != result:
        text += f" (extended: {_EXTENDED_NAMES.get(extended) or extended})"
    return text


def translate(exc: apsw.Error) -> SqlError:
    """The duro error for an apsw error that carries a SQLite result code."""
    result = getattr(exc, "result", -1)
    if result is None or result < 0:
        result = apsw.SQLITE_ERROR
    extended = getattr(exc, "extendedresult", None)
    if extended is None or extended < 0:
        extended = result
    offset = getattr(exc, "error_offset", -1)
    if offset is None:
        offset = -1
    message = exc.args[0] if exc.args else _code_name(result)
    text = format_sqlite_message(str(message), result, extended, offset)
    cls = StorageLimitError if result in _LIMIT_CODES else SqlError
    return cls(text, code=_code_name(result), extended=_EXTENDED_NAMES.get(extended) if extended != result else None)


def corrupt_error(path: os.PathLike[str] | str, exc: BaseException | None = None) -> CorruptDatabaseError:
    """The error every operation on a damaged database raises; names the file."""
    detail = ""
    if isinstance(exc, apsw.Error):
        result = getattr(exc, "result", apsw.SQLITE_CORRUPT)
        detail = f" ({exc.args[0] if exc.args else ''}: {_code_name(result)})"
    return CorruptDatabaseError(
        f"database file {os.fspath(path)!r} is not a valid SQLite database or is damaged{detail}; "
        "move it aside or restore it from a backup"
    )
