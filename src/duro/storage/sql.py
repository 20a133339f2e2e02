"""``ctx.storage.sql``: running user SQL and returning its results as cursors.

Owns statement splitting (several ``;``-separated statements per call; bindings go to the last one),
binding checks, the guarded re-run of ``ALTER TABLE`` (so ``RENAME TO _cf_x`` is refused), and the
:class:`SqlCursor` / :class:`Row` types. Semantics follow reference §3.5 and §13.

Known divergences from Cloudflare, on purpose:

* **Python ints bind as INTEGER**, not REAL (§13.7 measured REAL on workerd, because JS numbers are
  doubles). ``SELECT typeof(?)`` with ``1`` is ``integer`` here, and ``? / 2`` with ``3`` is ``1``.
  Integer results come back as ``int`` at full 64-bit precision, not as doubles. Deliberate:
  Python code is written for exact ints, and REAL would silently round ids and counters above
  2^53 (docs/cloudflare.md, Differences 1).
* Each ``exec`` runs its statement to completion before returning and buffers the rows, so
  ``rows_read`` / ``rows_written`` are final at once instead of growing during iteration.
* ``rows_read`` / ``rows_written`` count the last statement as Cloudflare does (rows visited, rows
  and index entries written), rebuilt from what stock SQLite exposes (``storage/rowcounts.py``,
  which lists the statement shapes where the numbers still differ).

Every ``exec``, a ``SELECT`` too, opens the database and creates its file if there is none (and
begins the implicit transaction). An object that only read still leaves no file: the database,
empty, is removed when it closes.

It runs user statements only through the port's ``run_user`` (the authorizer on) and its own
guard statements only through ``run_internal``. This module must never commit.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import apsw

from duro.errors import InvalidInputError, SqlError, StorageError, StorageLimitError

if TYPE_CHECKING:  # pragma: no cover
    from duro.storage.connection import DatabaseConnection

__all__ = ["SqlStorage", "SqlCursor", "RawCursor", "Row", "split_statements"]

_NO_STATEMENT = "SQL code did not contain a statement."
_TOO_LONG = "statement too long: SQLITE_TOOBIG"
MAX_SQL_BYTES = 100_000  # of the whole text of one exec() call, in UTF-8 (Cloudflare's limit)
_MAX_SQL_CHARS = MAX_SQL_BYTES // 4  # shorter texts cannot be over the limit: no need to encode
_WRONG_BINDINGS = "Wrong number of parameter bindings for SQL query."
_MULTI_BINDINGS = (
    "When executing multiple SQL statements in a single call, only the last statement can have "
    "parameters."
)
_NO_RESULTS = "Expected exactly one result from SQL query, but got no results."
_MANY_RESULTS = "Expected exactly one result from SQL query, but got multiple results."
_NOT_AUTHORIZED = "not authorized: SQLITE_AUTH"
_RESERVED_NAMES = (
    "SELECT name FROM sqlite_master "
    "WHERE lower(substr(name, 1, 4)) = '_cf_' OR lower(substr(tbl_name, 1, 4)) = '_cf_'"
)

_BIND_TYPES = frozenset({type(None), int, float, str, bytes, bool})

# Whitespace and comments only (an unterminated /* comment runs to the end, as in SQLite).
_BLANK = re.compile(r"(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?(?:\*/|\Z))*\Z", re.S)


@functools.lru_cache(maxsize=256)
def split_statements(query: str) -> tuple[str, ...]:
    """Split ``query`` into statements with SQLite's own notion of a complete statement
    (``sqlite3_complete``, which knows strings, comments and trigger bodies). Empty statements are
    dropped. Anything but whitespace after the last statement (a comment, a stray ``;``) is kept
    as a final empty string: Cloudflare runs the statements and then fails on it."""
    pieces = []
    start = 0
    end_of_last = 0  # where the text after the last real statement begins
    pos = query.find(";")
    while pos != -1:
        candidate = query[start:pos + 1]
        if apsw.complete(candidate):
            if not _BLANK.match(candidate, 0, len(candidate) - 1):
                pieces.append(candidate)
                end_of_last = pos + 1
            start = pos + 1
        pos = query.find(";", pos + 1)
    rest = query[start:]
    if rest and not _BLANK.match(rest):
        pieces.append(rest)
    elif pieces and not query[end_of_last:].isspace() and end_of_last < len(query):
        pieces.append("")
    return tuple(pieces)


def _check_bindings(bindings: tuple[Any, ...]) -> None:
    for i, value in enumerate(bindings, 1):
        if type(value) in _BIND_TYPES or isinstance(value, (int, float, str, bytes, bytearray, memoryview)):
            continue
        raise TypeError(
            f"SQL binding {i} has type {type(value).__name__!r}, which cannot be bound; "
            "use None, bool, int, float, str, bytes, bytearray or memoryview"
        )


def _bad_value(exc: Exception) -> InvalidInputError:
    if isinstance(exc, OverflowError):
        return InvalidInputError("an int SQL binding is outside the signed 64-bit range SQLite stores")
    return InvalidInputError(f"SQL text or binding is not valid Unicode: {exc}")


class Row(dict):
    """One result row: a dict from column name to value that also allows ``row.name``.
    With duplicate column names the last column wins. Names that are dict methods (``keys``,
    ``items``, ...) must be read as ``row["keys"]``."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"row has no column {name!r}") from None

    def to_py(self) -> Row:
        """Cloudflare Python code calls ``.to_py()`` on JS results; a Row already is Python."""
        return self


def _done(value: Any = None, done: bool = False) -> Row:
    return Row(done=done, value=value)


class SqlCursor:
    """The result of one ``exec``: an iterator of :class:`Row`.

    ``next()`` is the JS iterator protocol (returns a row with ``done`` and ``value``);
    ``__next__`` is Python's. ``raw()`` iterates the same rows as lists, sharing the position.
    """

    __slots__ = ("_rows", "_pos", "_desc", "_names", "rows_read", "rows_written")

    def __init__(self, rows: list[tuple[Any, ...]], desc: tuple[tuple[str, Any], ...],
                 rows_read: int, rows_written: int) -> None:
        self._rows = rows
        self._pos = 0
        self._desc = desc
        self._names: tuple[str, ...] | None = None
        self.rows_read = rows_read
        self.rows_written = rows_written

    def _columns(self) -> tuple[str, ...]:
        names = self._names
        if names is None:
            names = self._names = tuple(d[0] for d in self._desc)
        return names

    @property
    def column_names(self) -> list[str]:
        """The result's column names in order, duplicates kept; available after consumption."""
        return list(self._columns())

    columnNames = column_names  # noqa: N815 - Cloudflare spelling

    @property
    def rowsRead(self) -> int:  # noqa: N802 - Cloudflare spelling
        return self.rows_read

    @property
    def rowsWritten(self) -> int:  # noqa: N802 - Cloudflare spelling
        return self.rows_written

    def __iter__(self) -> SqlCursor:
        return self

    def __next__(self) -> Row:
        pos = self._pos
        if pos >= len(self._rows):
            raise StopIteration
        self._pos = pos + 1
        return Row(zip(self._columns(), self._rows[pos]))

    def next(self) -> Row:
        """JS iterator protocol: ``{"done": False, "value": row}`` or ``{"done": True, "value": None}``."""
        for row in self:
            return _done(row)
        return _done(done=True)

    def to_array(self) -> list[Row]:
        """The remaining rows."""
        names = self._columns()
        rows = self._rows[self._pos:]
        self._pos = len(self._rows)
        return [Row(zip(names, r)) for r in rows]

    toArray = to_array  # noqa: N815 - Cloudflare spelling

    def one(self) -> Row:
        """The only remaining row; ``StorageError`` if there is none or more than one."""
        remaining = len(self._rows) - self._pos
        if remaining == 0:
            raise StorageError(_NO_RESULTS)
        if remaining > 1:
            raise StorageError(_MANY_RESULTS)
        return next(self)

    def raw(self) -> RawCursor:
        """The rows as lists in column order, sharing this cursor's position."""
        return RawCursor(self)

    def __repr__(self) -> str:
        return f"<SqlCursor columns={self.column_names} rows={len(self._rows)} at={self._pos}>"


class RawCursor:
    """``cursor.raw()``: the same rows as lists. Iterable, with ``next()`` and ``to_array()``."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: SqlCursor) -> None:
        self._cursor = cursor

    def __iter__(self) -> RawCursor:
        return self

    def __next__(self) -> list[Any]:
        c = self._cursor
        pos = c._pos
        if pos >= len(c._rows):
            raise StopIteration
        c._pos = pos + 1
        return list(c._rows[pos])

    def next(self) -> Row:
        for row in self:
            return _done(row)
        return _done(done=True)

    def to_array(self) -> list[list[Any]]:
        c = self._cursor
        rows = c._rows[c._pos:]
        c._pos = len(c._rows)
        return [list(r) for r in rows]

    toArray = to_array  # noqa: N815 - Cloudflare spelling

    @property
    def column_names(self) -> list[str]:
        return self._cursor.column_names

    columnNames = column_names  # noqa: N815 - Cloudflare spelling

    @property
    def rows_read(self) -> int:
        return self._cursor.rows_read

    @property
    def rows_written(self) -> int:
        return self._cursor.rows_written

    rowsRead = rows_read  # noqa: N815
    rowsWritten = rows_written  # noqa: N815


class SqlStorage:
    """``ctx.storage.sql`` of one object, over its storage port."""

    __slots__ = ("_port", "_database_size")

    def __init__(self, port: DatabaseConnection, database_size: Callable[[], int]) -> None:
        self._port = port
        self._database_size = database_size

    @property
    def database_size(self) -> int:
        return self._database_size()

    databaseSize = database_size  # noqa: N815 - Cloudflare spelling

    def exec(self, query: str, *bindings: Any) -> SqlCursor:
        """Run ``query`` now and return its cursor. See the module docstring for the rules.
        Opens the database, creating the file if there is none, and begins the implicit
        transaction, even for a ``SELECT``: an object that only read leaves no file behind
        because an empty database is removed when it closes."""
        if type(query) is not str:
            if not isinstance(query, str):
                raise TypeError(f"exec() query must be a str, not {type(query).__name__}")
        for value in bindings:
            if type(value) not in _BIND_TYPES:
                _check_bindings(bindings)
                break
        if len(query) > _MAX_SQL_CHARS and len(query.encode("utf-8", "surrogatepass")) > MAX_SQL_BYTES:
            raise StorageLimitError(_TOO_LONG, code="SQLITE_TOOBIG")
        if ";" in query:
            pieces = split_statements(query)
            if not pieces:
                raise SqlError(_NO_STATEMENT)
            if not pieces[-1]:  # only a comment or a stray ";" after the last statement
                for piece in pieces[:-1]:
                    self._run_first_step(piece)
                raise SqlError(_NO_STATEMENT)
        else:
            pieces = (query,)
        port = self._port
        if not port.txn.open:
            port.ensure_transaction()
        last = pieces[-1]
        for piece in pieces[:-1]:
            self._run_first_step(piece)
        # The last statement is run here rather than through a helper: this is every request's
        # path, and a call costs about as much as the checks above.
        try:
            rows = port.run_user(last, bindings)
        except apsw.BindingsError:
            raise SqlError(_WRONG_BINDINGS) from None
        except (OverflowError, UnicodeEncodeError) as e:
            raise _bad_value(e) from None
        if rows is None:
            rows = self._run_guarded_alter(last, bindings)
            port.last_counts = (0, 0)
        desc = port.user_description
        if desc is None:
            raise SqlError(_NO_STATEMENT)
        read, written = port.last_counts
        return SqlCursor(rows, desc, read, written)

    def _run_first_step(self, piece: str) -> None:
        """Run a statement before the last one: only its first step (as workerd), no bindings."""
        try:
            rows = self._port.run_user(piece, (), False)
        except apsw.BindingsError:
            raise SqlError(_MULTI_BINDINGS) from None
        except (OverflowError, UnicodeEncodeError) as e:
            raise _bad_value(e) from None
        if rows is None:
            self._run_guarded_alter(piece, ())

    def _run_guarded_alter(self, piece: str, bindings: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """SQLite does not tell the authorizer the new name in ``ALTER TABLE ... RENAME TO``, so an
        ALTER runs inside a savepoint and is undone if it made a ``_cf_`` name appear."""
        port = self._port
        before = self._reserved_names()
        port.run_internal("SAVEPOINT _cf_alter_guard")
        try:
            rows = port.run_user_alter(piece, bindings)
            allowed = not (self._reserved_names() - before)
        except BaseException:
            port.abandon_savepoint("_cf_alter_guard")
            raise
        if not allowed:
            port.abandon_savepoint("_cf_alter_guard")
            raise SqlError(_NOT_AUTHORIZED, code="SQLITE_AUTH")
        port.run_internal("RELEASE _cf_alter_guard")
        return rows

    def _reserved_names(self) -> set[str]:
        return {row[0] for row in self._port.run_internal(_RESERVED_NAMES)}
