"""Offline work on one object's database file, for ``duro objects`` and the server's admin
endpoint: read-only inspection, SQL, export and import.

Reads never change a file: a database is opened read-only, and ``immutable`` when it is at rest (no
``-shm``, and no ``-wal`` or an empty one); otherwise the read-only connection makes a ``-shm`` of its
own, which the server removes when it closes the object. A server's open object takes no locks
(opening.py), so every read checks afterwards that it saw one state (``_read_consistently``). Writes (:func:`run_sql` with ``write=True``, :func:`import_database`) must only run while no
live instance has the database open: the caller holds the data directory's lock, or is the server
after resetting the object. An import replaces the file atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import datetime
import os
import pathlib
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import apsw

from duro.errors import InvalidInputError, StorageError
from duro.storage import history, journal
from duro.storage.paths import fsync_dir, make_dirs_durably, precreate
from duro.storage.integrity import run_check
from duro.storage.journal import HistoryOptions, ObjectHistory, parse_bookmark

__all__ = ["ObjectSummary", "SqlResult", "open_readonly", "summarize", "run_sql", "export_database",
           "check_sqlite_file", "import_database", "write_name", "set_name", "files_of", "remove_files",
           "HistoryUnavailable", "history_options", "history_range", "check_point", "find_bookmark",
           "restore_object", "branch_object", "after_outside_write", "alarm_of", "index_alarm_offline",
           "integrity_problems"]

Progress = Callable[[int, int], None]  # (done, total) in pages
SQLITE_HEADER = b"SQLite format 3\x00"
_BACKUP_STEP = 1024  # pages per backup step: 4 MiB with 4 KiB pages
_META = "_cf_METADATA"


@dataclass(frozen=True)
class ObjectSummary:
    """What ``duro objects list`` and ``show`` print about one database file."""

    path: pathlib.Path
    size: int  # bytes on disk: the database file plus its -wal
    last_write_ms: int  # modification time of the database or its -wal, whichever is later
    alarm_ms: int | None
    name: str | None
    # Filled by summarize(detail=True) only:
    database_size: int | None = None  # page_count * page_size
    tables: tuple[tuple[str, int], ...] = field(default=())  # (user table, row count)
    kv_keys: int | None = None


@dataclass(frozen=True)
class SqlResult:
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    changes: int


def files_of(path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """The database file and its ``-wal`` and ``-shm`` companions."""
    return path, pathlib.Path(str(path) + "-wal"), pathlib.Path(str(path) + "-shm")


def remove_files(path: pathlib.Path) -> None:
    for p in files_of(path):
        p.unlink(missing_ok=True)


def _error(exc: apsw.Error, path: pathlib.Path, doing: str) -> StorageError:
    return StorageError(f"{doing} {path}: {exc}")


def open_readonly(path: str | os.PathLike[str], *, immutable: bool | None = None) -> apsw.Connection:
    """A read-only connection that creates no file. Raises StorageError if the file is missing or
    is not a readable SQLite database. ``immutable`` defaults to "the database is at rest" (see
    :func:`_at_rest`): nothing has it open, and opening it through SQLite's locking would create a
    -shm file."""
    path = pathlib.Path(path).absolute()
    if not path.is_file():
        raise StorageError(f"no database file at {path}")
    flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
    uri = "file:" + urllib.parse.quote(str(path))
    if immutable is None:
        immutable = _at_rest(_fingerprint(path))
    if immutable:
        uri += "?immutable=1"
    try:
        conn = apsw.Connection(uri, flags=flags)
        conn.limit(apsw.SQLITE_LIMIT_ATTACHED, 0)
        conn.set_busy_timeout(5000)
        conn.execute("PRAGMA query_only = ON; PRAGMA schema_version").fetchall()
    except apsw.Error as e:
        raise _error(e, path, "cannot read database") from e
    return conn


def _fingerprint(path: pathlib.Path) -> tuple[Any, ...]:
    """(inode, size, mtime) of the database, its -wal and its -shm; None for a missing file."""
    out: list[Any] = []
    for p in files_of(path):
        try:
            st = p.stat()
        except FileNotFoundError:
            out.append(None)
        else:
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _at_rest(fingerprint: tuple[Any, ...]) -> bool:
    """No connection has the database open (a -shm file exists while one has; the runtime removes
    it on close) and its -wal holds nothing (the runtime keeps an empty -wal after a clean close):
    the database file alone is the whole state, and an immutable read is right."""
    wal, shm = fingerprint[1], fingerprint[2]
    return shm is None and (wal is None or wal[1] == 0)


T = TypeVar("T")


_READ_TRIES = 8


def _wal_header(path: pathlib.Path) -> bytes | None:
    """The first 32 bytes of the database's -wal (its salts change when the WAL starts over)."""
    try:
        with open(str(path) + "-wal", "rb") as f:
            return f.read(32)
    except FileNotFoundError:
        return None


def _read_consistently(path: pathlib.Path, read: Callable[[apsw.Connection], T]) -> T:
    """``read(conn)`` on a read-only connection, known to have seen one state of the object.

    A server's open object holds no lock a reader could wait on (opening.py: the "unix-none" VFS,
    no -shm), so no read is protected by SQLite's locking: a read saw one state only if the
    database file did not change (a checkpoint writes it) and its -wal did not start over or go
    (a new header) from before the read began to after it ended; frames appended meanwhile are not
    part of its snapshot and do no harm. A read that overlapped such a change is done again; an
    immutable read (at rest when it began: no -wal, or an empty one) likewise. After
    ``_READ_TRIES`` reads that all overlapped a change, StorageError saying so (retry)."""
    for _ in range(_READ_TRIES):
        before = (_fingerprint(path), _wal_header(path))
        conn = open_readonly(path, immutable=_at_rest(before[0]))
        try:
            result: T | None = read(conn)
            failed: BaseException | None = None
        except (StorageError, InvalidInputError) as e:
            result, failed = None, e
        finally:
            conn.close()
        after = (_fingerprint(path), _wal_header(path))
        if before[0][0] == after[0][0] and before[1] == after[1] and \
                (not _at_rest(before[0]) or before[0][1] == after[0][1]):
            if failed is not None:
                raise failed
            return result  # type: ignore[return-value]
    raise StorageError(f"cannot read {path}: the object changed under every one of {_READ_TRIES} reads "
                       "(a server is writing it fast); try again")


def _disk_stats(path: pathlib.Path) -> tuple[int, int]:
    size = 0
    mtime = 0
    for p in files_of(path)[:2]:
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        size += st.st_size
        mtime = max(mtime, st.st_mtime_ns // 1_000_000)
    return size, mtime


def integrity_problems(path: str | os.PathLike[str]) -> list[str]:
    """What ``PRAGMA integrity_check`` finds wrong with one object's database (empty: sound).
    Read-only; works while a server has the object open (through SQLite's locking then). A file
    that cannot be opened as a database is one problem, named."""
    path = pathlib.Path(path)
    try:
        return _read_consistently(path, run_check)
    except StorageError as e:
        if not path.is_file():
            raise
        return [str(e)]


def _user_tables(conn: apsw.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, 7) <> 'sqlite_' "
        "AND lower(substr(name, 1, 4)) <> '_cf_' ORDER BY name").fetchall()
    return [r[0] for r in rows]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def summarize(path: str | os.PathLike[str], *, detail: bool = False) -> ObjectSummary:
    """Size, last write, alarm and name of one object; with ``detail``, also its tables with row
    counts, the number of KV keys and the SQLite database size."""
    path = pathlib.Path(path)

    def read(conn: apsw.Connection) -> ObjectSummary:
        size, mtime = _disk_stats(path)
        alarm = name = None
        try:
            if conn.table_exists("main", _META):
                for key, value in conn.execute(f"SELECT key, value FROM {_META} WHERE key IN (1, 3)"):
                    if key == 1:
                        alarm = value
                    else:
                        name = value if isinstance(value, str) else bytes(value).decode(errors="replace")
            if not detail:
                return ObjectSummary(path, size, mtime, alarm, name)
            tables = tuple((t, conn.execute(f"SELECT count(*) FROM {_quote(t)}").fetchall()[0][0])
                           for t in _user_tables(conn))
            kv = conn.execute("SELECT count(*) FROM _cf_KV").fetchall()[0][0] \
                if conn.table_exists("main", "_cf_KV") else 0
            pages = conn.execute("PRAGMA page_count").fetchall()[0][0]
            page_size = conn.execute("PRAGMA page_size").fetchall()[0][0]
        except apsw.Error as e:
            raise _error(e, path, "cannot read database") from e
        return ObjectSummary(path, size, mtime, alarm, name, pages * page_size, tables, kv)

    return _read_consistently(path, read)


def run_sql(path: str | os.PathLike[str], sql: str, bindings: Sequence[Any] = (), *,
            write: bool = False) -> SqlResult:
    """Run ``sql`` (one or more statements) on an existing database; the rows and columns are
    those of the last statement. Without ``write`` the connection is read-only and a statement
    that writes fails with InvalidInputError. With ``write`` everything runs in one transaction,
    committed with a full fsync, or rolled back entirely on error."""
    path = pathlib.Path(path)
    if not write:
        return _read_consistently(path, lambda conn: _execute(conn, path, sql, bindings, False))
    if not path.is_file():
        raise StorageError(f"no database file at {path}")
    try:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE)
        conn.limit(apsw.SQLITE_LIMIT_ATTACHED, 0)
        conn.set_busy_timeout(5000)
        conn.execute("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON").fetchall()
    except apsw.Error as e:
        raise _error(e, path, "cannot open database") from e
    try:
        return _execute(conn, path, sql, bindings, True)
    finally:
        conn.close()


def _execute(conn: apsw.Connection, path: pathlib.Path, sql: str, bindings: Sequence[Any],
             write: bool) -> SqlResult:
    state: dict[str, Any] = {"columns": (), "rows": []}

    def trace(cursor: apsw.Cursor, statement: str, bindings: Any) -> bool:
        try:
            state["columns"] = tuple(d[0] for d in cursor.description)
        except apsw.ExecutionCompleteError:  # pragma: no cover - description of a finished statement
            state["columns"] = ()
        state["rows"] = []
        return True

    before = conn.total_changes()
    cur = conn.cursor()
    cur.exec_trace = trace
    try:
        if write:
            conn.execute("BEGIN IMMEDIATE")
        for row in cur.execute(sql, tuple(bindings)):
            state["rows"].append(row)
        if write:
            _desync(conn, path)
            conn.execute("COMMIT")
    except apsw.ReadOnlyError as e:
        raise InvalidInputError(
            "this SQL writes to the database; reading is the default — add --write to change data") from e
    except apsw.Error as e:
        if write and not conn.get_autocommit():
            conn.execute("ROLLBACK")
        raise InvalidInputError(f"SQL error: {e}") from e
    return SqlResult(state["columns"], state["rows"], conn.total_changes() - before)


def _backup(src: apsw.Connection, dst: apsw.Connection, progress: Progress | None) -> None:
    with dst.backup("main", src, "main") as b:
        while not b.done:
            b.step(_BACKUP_STEP)
            if progress is not None:
                progress(b.page_count - b.remaining, b.page_count)


def export_database(path: str | os.PathLike[str], out: str | os.PathLike[str], *,
                    progress: Progress | None = None) -> int:
    """Copy an object's database, consistent as of one moment, into ``out`` as a standalone
    SQLite file (rollback journal, no ``-wal``). ``out`` is replaced if it exists. Returns its
    size in bytes."""
    path, out = pathlib.Path(path), pathlib.Path(out)
    tmp = out.with_name(out.name + ".tmp")

    def copy(src: apsw.Connection) -> None:
        remove_files(tmp)
        try:
            precreate(tmp)
            dst = apsw.Connection(str(tmp))
            try:
                _backup(src, dst, progress)
                dst.execute("PRAGMA journal_mode = DELETE").fetchall()
            finally:
                dst.close()
        except apsw.Error as e:
            raise _error(e, out, "cannot write") from e

    try:
        _read_consistently(path, copy)
    except BaseException:
        remove_files(tmp)
        raise
    fsync_dir(tmp)
    os.replace(tmp, out)
    return out.stat().st_size


def check_sqlite_file(path: str | os.PathLike[str]) -> None:
    """Raise InvalidInputError unless ``path`` is a readable SQLite database."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path} does not exist or is not a file")
    with open(path, "rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        raise InvalidInputError(f"{path} is not a SQLite database (it does not start with the SQLite header)")
    try:
        open_readonly(path).close()
    except StorageError as e:
        raise InvalidInputError(f"{path} is not a readable SQLite database: {e}") from e


def _desync(conn: apsw.Connection, path: pathlib.Path) -> None:
    """In a write made outside ObjectDatabase: set ``user_version`` to a nonzero value, the flag
    by which the history notices a change it did not record and snapshots it instead of applying
    later page images to a stale base."""
    rng = history_range(path)
    if rng is None:
        return
    last_seq = parse_bookmark(rng[1])[0]
    conn.execute(f"PRAGMA user_version = {(last_seq + 1) % 2**32}")


def write_name(conn: apsw.Connection, name: str | None) -> None:
    """Set (or, with None, remove) the name in key 3 of ``_cf_METADATA``."""
    if name is None:
        if conn.table_exists("main", _META):
            conn.execute(f"DELETE FROM {_META} WHERE key = 3")
        return
    conn.execute(f"CREATE TABLE IF NOT EXISTS {_META} (key INTEGER PRIMARY KEY, value BLOB)")
    conn.execute(f"INSERT OR REPLACE INTO {_META} (key, value) VALUES (3, ?)", (name,))


def import_database(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, name: str | None,
                    progress: Progress | None = None) -> None:
    """Make ``dst`` a copy of the SQLite file ``src``, in WAL mode, named ``name``. Any database
    already at ``dst`` (and its ``-wal``/``-shm``) is replaced atomically; on error ``dst`` is left
    as it was."""
    src, dst = pathlib.Path(src), pathlib.Path(dst)
    check_sqlite_file(src)
    make_dirs_durably(dst.parent)
    tmp = dst.with_name(dst.name + ".import-tmp")
    remove_files(tmp)
    source = open_readonly(src)
    try:
        precreate(tmp)
        conn = apsw.Connection(str(tmp))
        try:
            _backup(source, conn, progress)
            conn.execute("PRAGMA journal_mode = WAL").fetchall()
            with conn:
                write_name(conn, name)
                _desync(conn, dst)
        finally:
            conn.close()  # checkpoints and removes tmp's -wal
    except apsw.Error as e:
        remove_files(tmp)
        raise _error(e, src, "cannot import") from e
    except BaseException:
        remove_files(tmp)
        raise
    finally:
        source.close()
    fsync_dir(tmp)
    # The old database's WAL must never be replayed into the new file.
    for p in files_of(dst)[1:]:
        p.unlink(missing_ok=True)
    os.replace(tmp, dst)
    fsync_dir(dst.parent)


def set_name(path: str | os.PathLike[str], name: str | None) -> None:
    """Record ``name`` (key 3) in an existing database, with a full fsync."""
    try:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE)
    except apsw.Error as e:
        raise _error(e, pathlib.Path(path), "cannot open database") from e
    try:
        conn.execute("PRAGMA synchronous = FULL").fetchall()
        with conn:
            write_name(conn, name)
            _desync(conn, pathlib.Path(path))
    except apsw.Error as e:
        raise _error(e, pathlib.Path(path), "cannot write the name into") from e
    finally:
        conn.close()


# ---- point-in-time history (storage/history.py, storage/journal.py) --------------------------------
# The history functions attach a read-write connection and may heal the history (append a
# snapshot): they run only where nothing else has the object open — under the data directory's
# lock, or in the server after the object's reset. Reading the bookmark range (``show``) uses
# history_range(), which only reads the .history file.


class HistoryUnavailable(StorageError):
    """Point-in-time history is off for this project (raised by :func:`check_point` for a time)."""


def history_options(config: Any) -> HistoryOptions | None:
    """The HistoryOptions for a project config (its ``history_retention`` in days, when it has
    one), else the default 30 days; None when history is off (``history_retention = 0``)."""
    days = None
    for holder in (config, getattr(config, "limits", None)):
        if holder is not None and getattr(holder, "history_retention", None) is not None:
            days = holder.history_retention
            break
    if days is None:
        return HistoryOptions()
    return HistoryOptions.from_days(float(days))


def history_range(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """(first, last) bookmark in the object's ``.history`` file, read without changing anything;
    None when there is no history file. A last record that is being appended right now is skipped."""
    return journal.read_bookmark_range(journal.history_path(path))


def check_point(bookmark: str | None, at_ms: int | None, options: Any) -> None:
    """Checks that need no file: the bookmark's form, and a time inside the retention window."""
    if bookmark is not None:
        parse_bookmark(bookmark)
        return
    if at_ms is None:
        raise InvalidInputError("give a time (--at) or a bookmark (--bookmark)")
    if options is None:
        raise HistoryUnavailable("point-in-time history is off for this project (history_retention = 0)")
    now = int(options.now_ms())
    if at_ms > now:
        raise InvalidInputError(f"time {_iso(at_ms)} is in the future (now is {_iso(now)})")
    if at_ms < now - options.retention_ms:
        raise InvalidInputError(f"time {_iso(at_ms)} is outside the retention window: history is kept for "
                                f"{options.retention_ms / 86_400_000:g} days, back to {_iso(now - options.retention_ms)}")


def _iso(ms: int) -> str:
    t = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def find_bookmark(path: str | os.PathLike[str], *, bookmark: str | None = None, at_ms: int | None = None,
                  options: Any = None) -> str:
    """The bookmark to go back to: ``bookmark`` itself (checked against the history), or the one
    for ``at_ms``. Bad input raises InvalidInputError before anything is changed."""
    check_point(bookmark, at_ms, options)
    if bookmark is None:
        return str(history.bookmark_for_time(path, at_ms, options=options))
    oh = ObjectHistory(pathlib.Path(path), options or _default_options())
    try:
        oh.resolve(bookmark)
    finally:
        oh.close()
    return bookmark


def _default_options() -> HistoryOptions:
    return HistoryOptions()


def restore_object(path: str | os.PathLike[str], bookmark: str, options: Any = None) -> dict[str, Any]:
    """Restore the object at ``path`` to ``bookmark``. Returns the bookmark gone back to, the
    bookmark of the restore itself, and the one that undoes it (the state just before)."""
    before = history.current_bookmark(path, options=options)
    after = history.restore(path, bookmark, options=options)
    return {"bookmark": bookmark, "restore_bookmark": after, "undo": before}


def branch_object(src: str | os.PathLike[str], dst: str | os.PathLike[str], bookmark: str,
                  name: str | None, options: Any = None) -> dict[str, Any]:
    """Create ``dst`` (with its own history) as ``src`` was at ``bookmark``, named ``name``."""
    dst = pathlib.Path(dst)
    if dst.exists():
        raise InvalidInputError(f"{dst} already exists")
    make_dirs_durably(dst.parent)
    history.branch(src, dst, bookmark, options=options)
    if dst.exists():  # an empty state leaves no database
        set_name(dst, name)
        after_outside_write(dst, options)
    return {"bookmark": bookmark}


def after_outside_write(path: str | os.PathLike[str], options: Any) -> None:
    """After a write made outside ObjectDatabase (the database's ``user_version`` no longer
    matches its history): let the history take a snapshot now, if the object has a history."""
    if options is None or not journal.history_path(path).exists():
        return
    history.current_bookmark(path, options=options)


# ---- the node's alarm index (storage/alarm_index.py, runtime/alarms.py) ----------------------------


def alarm_of(path: str | os.PathLike[str]) -> int | None:
    """The object's alarm time (epoch ms), or None (also when it has no file)."""
    if not pathlib.Path(path).is_file():
        return None
    return summarize(path).alarm_ms


def index_alarm_offline(data_dir: str | os.PathLike[str], unique_key: str, hex_id: str, name: str | None,
                        path: str | os.PathLike[str]) -> int | None:
    """After a write made outside the runtime, with no server running: if the object now has an
    alarm, make sure ``DATA/alarms.sqlite`` will look at it by then (the scheduler's invariant: an
    index row no later than the object's alarm; an early row is a harmless phantom). Returns the
    alarm time, or None."""
    when = alarm_of(path)
    if when is None:
        return None
    from duro.storage.alarm_index import AlarmIndex, IndexRow
    index = AlarmIndex(pathlib.Path(data_dir) / "alarms.sqlite")
    try:
        current = next((r for r in index.load() if (r.namespace, r.object_id) == (unique_key, hex_id)), None)
        if current is None:
            index.apply([IndexRow(unique_key, hex_id, name, int(when))], [])
        elif current.due_ms > when:
            index.apply([current._replace(due_ms=int(when))], [])
    finally:
        index.close()
    fsync_dir(index.path)
    return when
