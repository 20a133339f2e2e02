"""One Durable Object's database: a single SQLite file opened lazily with apsw.

Owns the connection and its setup (WAL, limits, defensive mode, authorizer), the implicit
transaction that coalesces an object's writes until the runtime calls :meth:`commit`, savepoints
for ``transaction()`` / ``transactionSync()``, the alarm row, ``deleteAll``, the database size, and
leaving no file behind for an object that holds nothing.

It must never: create the file for a read; fsync (the runtime makes commits durable with its own
batched fdatasync of the WAL file); start threads or use asyncio (a periodic checkpoint runs on a thread only through the
``offload`` callback the runtime passes); let an apsw exception escape untranslated;
run duro's own statements with the user authorizer, or user statements without it.

Hidden tables: ``_cf_KV(key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID`` (see kv.py) and
``_cf_METADATA(key INTEGER PRIMARY KEY, value BLOB)``, key 1 holding the alarm time in epoch ms.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pathlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import apsw

from duro.errors import CorruptDatabaseError, InternalError, SqlError, StorageError
from duro.storage.authorizer import Authorizer
from duro.storage.history import apply_pending_restore
from duro.storage.journal import DetachedHistory, HistoryOptions, ObjectHistory, as_path, fsync_dir, history_path
from duro.storage.kv import INTERNAL, KvMixin, SyncKv
from duro.storage.sql import SqlStorage
from duro.storage.translate import CORRUPT_CODES, corrupt_error, translate

__all__ = ["ObjectDatabase", "EMPTY_DATABASE_SIZE", "MAX_DATABASE_BYTES"]

T = TypeVar("T")
_UNKNOWN = object()

PAGE_SIZE = 4096
EMPTY_DATABASE_SIZE = PAGE_SIZE  # §13.6: a fresh object, and one after deleteAll(), reports 4096
MAX_DATABASE_BYTES = 10 * 1000**3  # 10 GB per object (§7.4); beyond it writes fail with SQLITE_FULL
_STATEMENT_CACHE = 128
CHECKPOINT_PAGES = 1000  # SQLite's own auto-checkpoint threshold
_log = logging.getLogger("duro.storage")

# Databases whose close is being finished on a worker thread (``close(offload=True)``): opening
# the same file again, through any ObjectDatabase, waits until that close is done. Per path:
# (done, claim, finish) — whoever takes ``claim`` first runs ``finish``.
_closing: dict[pathlib.Path, tuple[threading.Event, threading.Lock, Callable[[], None]]] = {}


def wait_closed(path: str | os.PathLike[str]) -> None:
    """Return once no offloaded close of the database at ``path`` is in progress. A close still
    queued behind others is finished here and now (one close's fsyncs, not the queue's); one
    already running is waited for. Rare: an object opened again right after its eviction."""
    entry = _closing.get(pathlib.Path(path))
    if entry is None:
        return
    done, claim, finish = entry
    if claim.acquire(blocking=False):
        finish()
    else:
        done.wait()

# SQLite limits (reference §3.5, §7.4). SQLITE_LIMIT_LENGTH caps a string, a blob and a whole row,
# which is Cloudflare's documented 2 MB key+value / row limit.
_LIMITS = (
    (apsw.SQLITE_LIMIT_LENGTH, 2_000_000),
    (apsw.SQLITE_LIMIT_SQL_LENGTH, 100_000),
    (apsw.SQLITE_LIMIT_COLUMN, 100),
    (apsw.SQLITE_LIMIT_EXPR_DEPTH, 100),
    (apsw.SQLITE_LIMIT_COMPOUND_SELECT, 5),
    (apsw.SQLITE_LIMIT_VDBE_OP, 25_000),
    (apsw.SQLITE_LIMIT_FUNCTION_ARG, 127),  # what workerd sets; the docs say 32
    (apsw.SQLITE_LIMIT_LIKE_PATTERN_LENGTH, 50),
    (apsw.SQLITE_LIMIT_VARIABLE_NUMBER, 100),
    (apsw.SQLITE_LIMIT_TRIGGER_DEPTH, 10),
    (apsw.SQLITE_LIMIT_ATTACHED, 0),
    (apsw.SQLITE_LIMIT_WORKER_THREADS, 0),
)

# synchronous=NORMAL: a commit writes the WAL without fsyncing it (the runtime's barrier fdatasyncs
# the WAL of every commit, batched); checkpoints, and the WAL header when the WAL starts over, are
# synced by SQLite. The header sync must stay: turning SQLite's syncs off (measured faster to open)
# lets a power loss after a WAL restart replay stale, already checkpointed frames over newer pages
# (SQLite ticket ff5be73dee).
_SETUP = (
    f"PRAGMA page_size={PAGE_SIZE};"
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "PRAGMA foreign_keys=ON;"
    f"PRAGMA max_page_count={MAX_DATABASE_BYTES // PAGE_SIZE};"
    "PRAGMA schema_version;"  # reads the schema: a damaged or foreign file fails here
)

# On close: after SQLite's checkpoint, cut the WAL to zero bytes but keep the file (PERSIST_WAL),
# so the next open neither creates it again nor reads stale frames.
_BEFORE_CLOSE = "PRAGMA journal_size_limit=0"
_PERSIST_ON = ctypes.c_int(1)  # SQLite reads the int behind the pointer (it writes only for -1)

_META_CREATE = "CREATE TABLE IF NOT EXISTS _cf_METADATA (key INTEGER PRIMARY KEY, value BLOB)"
_ALARM_GET = "SELECT value FROM _cf_METADATA WHERE key = 1"
_ALARM_SET = "INSERT OR REPLACE INTO _cf_METADATA (key, value) VALUES (1, ?)"
_ALARM_DELETE = "DELETE FROM _cf_METADATA WHERE key = 1"
# Key 3: the object's name, when it was reached by name (``duro objects list`` shows it). Written
# once per connection by the first commit that writes and leaves data; it is not data itself.
_NAME_SET = "INSERT OR IGNORE INTO _cf_METADATA (key, value) VALUES (3, ?)"
_NAME_KNOWN = "SELECT 1 FROM _cf_METADATA WHERE key = 3"

_USER_SCHEMA = (
    "SELECT type, name, sql FROM sqlite_master "
    "WHERE substr(name, 1, 7) <> 'sqlite_' AND name NOT IN ('_cf_KV', '_cf_METADATA')"
)
_ANY_USER_SCHEMA = _USER_SCHEMA + " LIMIT 1"
_ANY_KV = "SELECT 1 FROM _cf_KV LIMIT 1"
_ANY_METADATA = "SELECT 1 FROM _cf_METADATA WHERE key <> 3 LIMIT 1"  # key 3, the name, is not data
_RESERVED_NAMES = (
    "SELECT name FROM sqlite_master "
    "WHERE lower(substr(name, 1, 4)) = '_cf_' OR lower(substr(tbl_name, 1, 4)) = '_cf_'"
)
_CRITICAL_MESSAGE = "Cannot commit transaction due to an earlier SQL critical error"
_DELETE_ALL_IN_TXN_MESSAGE = "Cannot call deleteAll() within a transaction"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _make_dirs_durably(folder: pathlib.Path) -> None:
    """Create ``folder`` and its missing parents, fsyncing each new entry's parent directory, so a
    power cut cannot take away the first object of a new namespace (its own file's entry is synced
    by the runtime with its first commit). Once per namespace; cheap."""
    missing = []
    p = folder
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        fsync_dir(d.parent)


class ObjectDatabase(KvMixin):
    """The storage of one object. Synchronous; one connection; opened on first use.

    Writes join an implicit transaction that stays open until :meth:`commit` (the runtime calls it
    at the end of the turn) or :meth:`rollback`. ``on_transaction_open`` is called once each time
    that transaction begins.
    """

    def __init__(self, path: str | os.PathLike[str], *,
                 on_transaction_open: Callable[[], None] | None = None, name: str | None = None,
                 history: HistoryOptions | None = None,
                 offload: Callable[[Callable[[], None]], None] | None = None) -> None:
        self.path = path = as_path(path)
        # Periodic checkpoints (every ~CHECKPOINT_PAGES WAL pages) fsync the WAL and the database:
        # the runtime passes ``offload`` to run them on a worker thread, off the event loop. Tools
        # (no offload) checkpoint inline. Opening and closing wait for a checkpoint in progress.
        self.offload = offload
        self._wal_pages = 0
        self._ckpt_idle = threading.Event()
        self._ckpt_idle.set()
        # Point-in-time recovery (journal.py): None when history is off.
        self.history = ObjectHistory(self.path, history) if history is not None else None
        self._mark_changed = False  # history off, but a history exists: tell it we write (commit())
        self.name = name  # recorded in _cf_METADATA key 3 (see _record_name)
        self._name_recorded = False
        self.wal_path = path.with_name(path.name + "-wal")
        self._shm_path = path.with_name(path.name + "-shm")
        self._on_transaction_open = on_transaction_open
        self._conn: apsw.Connection | None = None
        self._cur: apsw.Cursor | None = None  # duro's own statements
        self._ucur: apsw.Cursor | None = None  # user SQL (has the column-name exec tracer)
        self._auth = Authorizer()
        self._in_txn = False
        self._savepoints: list[str] = []
        self._savepoint_serial = 0
        self._txn_lost: SqlError | None = None
        self._corrupt: CorruptDatabaseError | None = None
        self._kv_table: bool | None = None  # None: not known yet on this connection
        self._meta_table: bool | None = None
        self._alarm: int | None | object = _UNKNOWN  # the alarm row, as last read or written
        self.commit_count = 0
        self.sql = SqlStorage(self)
        self.kv = SyncKv(self)

    # ---- state --------------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether the database file is on disk."""
        return self.path.exists()

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    @property
    def in_transaction(self) -> bool:
        return self._in_txn

    def attached_history(self) -> ObjectHistory:
        """The history, in step with the database (which is opened if it exists). Raises
        StorageError when history is off."""
        if self.history is None:
            raise StorageError("point-in-time recovery is off for this project (history_retention = 0); "
                               "set history_retention to a number of days in [tool.duro] to keep history")
        if self._conn is None:
            self._open(False)
        return self.history

    # ---- opening and closing ------------------------------------------------------------------

    def _open(self, create: bool) -> apsw.Connection | None:
        """The connection, opening it if needed. With ``create=False`` a missing file stays
        missing and None is returned."""
        if self._corrupt is not None:
            raise self._corrupt
        if self._conn is not None:
            return self._conn
        self._ckpt_idle.wait()
        if _closing:
            wait_closed(self.path)
        history = self.history
        if history is not None and not history.restore_checked:
            history.restore_checked = True  # once per instance: a restore waits for the next session
            apply_pending_restore(self.path, history.options)
        existed = self.path.exists()
        self._mark_changed = history is None and existed and history_path(self.path).exists()
        if not existed:
            if not create:
                return None
            _make_dirs_durably(self.path.parent)
            # A WAL left behind by a deleted database must never be replayed into a new one.
            self.wal_path.unlink(missing_ok=True)
            self._shm_path.unlink(missing_ok=True)
        flags = apsw.SQLITE_OPEN_READWRITE | (apsw.SQLITE_OPEN_CREATE if create else 0)
        try:
            conn = apsw.Connection(str(self.path), flags=flags, statementcachesize=_STATEMENT_CACHE)
        except apsw.CantOpenError as e:
            if not create and not self.path.exists():
                return None
            raise StorageError(f"cannot open database file {str(self.path)!r}: {e}") from e
        try:
            # Keep the -wal file when the connection closes: creating it again at every open is
            # the most expensive part of waking an object (the -shm file is removed on close).
            conn.file_control("main", apsw.SQLITE_FCNTL_PERSIST_WAL, ctypes.addressof(_PERSIST_ON))
            conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
            for limit, value in _LIMITS:
                conn.limit(limit, value)
            conn.execute(_SETUP).fetchall()
        except apsw.Error as e:
            conn.close()
            if getattr(e, "result", None) in CORRUPT_CODES:
                self._corrupt = corrupt_error(self.path, e)
                raise self._corrupt from e
            raise translate(e) from e
        conn.authorizer = self._auth
        # The hook replaces SQLite's auto-checkpoint, which would fsync inside COMMIT on the loop.
        self._wal_pages = 0
        conn.set_wal_hook(self._wal_hook)
        self._conn = conn
        self._cur = conn.cursor()
        self._ucur = conn.cursor()
        self._ucur.exec_trace = self.sql._trace
        self._forget_caches()
        if history is not None:
            try:
                history.attach(self._internal_uncached, self._checkpoint, existed)
            except BaseException:
                self._close_connection()
                raise
        return conn

    def _close_connection(self) -> None:
        self._ckpt_idle.wait()
        self._name_recorded = False
        if self.history is not None:
            self.history.close()
        conn = self._conn
        self._conn = self._cur = self._ucur = None
        self._in_txn = False
        self._savepoints.clear()
        self._forget_caches()
        if conn is not None:
            _close_quietly(conn, self._shm_path)

    def close(self, *, offload: bool = False) -> None:
        """Close the database. The caller must have committed what it wants kept: an open
        transaction is rolled back. An empty database's files are removed.

        With ``offload`` (and an ``offload`` function), only the bookkeeping happens here: the
        part that waits on the disk (fsyncing the history, SQLite's checkpoint as the connection
        closes, removing an empty database's files) runs on the worker thread, and opening the
        file again waits until it is done."""
        if self._conn is None:
            return
        try:
            if self._in_txn:
                self.rollback()
            self._txn_lost = None
            if offload and self.offload is not None:
                self._close_offloaded(self.offload)
                return
            if self.discard_files_if_empty():
                return
        finally:
            if self._conn is not None:
                self._close_connection()

    def _close_offloaded(self, offload: Callable[[Callable[[], None]], None]) -> None:
        # Asked here, not on the worker: a few cached statements, and measured faster overall than
        # a worker thread taking the GIL for them.
        empty = not self._has_data()
        history = self.history.detach() if self.history is not None else None
        conn = self._conn
        assert conn is not None
        self._name_recorded = False
        self._conn = self._cur = self._ucur = None
        self._in_txn = False
        self._savepoints.clear()
        self._forget_caches()
        path = self.path
        files = (path, self.wal_path, self._shm_path)
        ckpt_idle = self._ckpt_idle
        done = threading.Event()
        claim = threading.Lock()

        def finish() -> None:
            try:
                ckpt_idle.wait()  # a periodic checkpoint of this database finishes first
                _finish_close(conn, history, files, empty)
            except Exception as e:
                _log.error("closing %s failed: %s", path, e)
            finally:
                entry = _closing.get(path)
                if entry is not None and entry[0] is done:
                    del _closing[path]
                done.set()

        def job() -> None:
            if claim.acquire(blocking=False):  # not already finished by wait_closed()
                finish()
        _closing[path] = (done, claim, finish)
        try:
            offload(job)
        except RuntimeError:  # the runtime is shutting down: do it here
            job()

    def discard_files_if_empty(self) -> bool:
        """If the database holds no user schema, no KV rows and no alarm, and no transaction is
        open: checkpoint, close and delete the database, ``-wal`` and ``-shm`` files.

        Returns True if the object now has no files (also when it never had any)."""
        if self._corrupt is not None or self._in_txn:
            return False
        if self._conn is None:
            if _closing:
                wait_closed(self.path)
            if not self.path.exists():
                self.wal_path.unlink(missing_ok=True)
                self._shm_path.unlink(missing_ok=True)
                return True
            if self._open(False) is None:
                return True
        if self._has_data():
            return False
        if self.history is not None:
            self.history.sync()  # a checkpoint must not get ahead of the history
        try:
            self._conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
        except apsw.Error as e:
            raise self._error(e) from e
        self._close_connection()
        for p in (self.path, self.wal_path, self._shm_path):
            p.unlink(missing_ok=True)
        if self.history is not None:
            self.history.after_discard()  # the history stays, ending in the empty state
        return True

    # ---- running duro's own statements ---------------------------------------------------------

    def _internal(self, sql: str, bindings: Any = None) -> list[tuple[Any, ...]]:
        """Run one of duro's statements with the authorizer bypassed. It is prepared with the
        INTERNAL flag, which keeps it apart from a user statement of the same text in apsw's
        statement cache (the cache key includes the prepare flags), so user SQL can never reuse a
        statement that was authorized with the bypass on."""
        auth = self._auth
        auth.bypass = True
        try:
            return self._cur.execute(sql, bindings, prepare_flags=INTERNAL).fetchall()
        except apsw.Error as e:
            raise self._error(e) from e
        finally:
            auth.bypass = False

    def _internal_uncached(self, sql: str, bindings: Any = None) -> list[tuple[Any, ...]]:
        """:meth:`_internal` for the history's rare statements: kept out of the statement cache so
        they never evict the user's statements."""
        auth = self._auth
        auth.bypass = True
        try:
            return self._cur.execute(sql, bindings, can_cache=False, prepare_flags=INTERNAL).fetchall()
        except apsw.Error as e:
            raise self._error(e) from e
        finally:
            auth.bypass = False

    def _checkpoint(self, passive: bool = False) -> None:
        """TRUNCATE (the history needs an empty WAL when it attaches), or PASSIVE (the periodic
        checkpoint, which must never fail because someone is reading)."""
        mode = apsw.SQLITE_CHECKPOINT_PASSIVE if passive else apsw.SQLITE_CHECKPOINT_TRUNCATE
        try:
            self._conn.wal_checkpoint(mode=mode)
        except apsw.Error as e:
            raise self._error(e) from e

    def _error(self, exc: apsw.Error) -> StorageError:
        """Translate ``exc`` and update our state: a damaged database is closed and stays failed;
        a transaction SQLite rolled back on its own is recorded as lost."""
        if getattr(exc, "result", None) in CORRUPT_CODES:
            self._corrupt = corrupt_error(self.path, exc)
            try:
                self._close_connection()
            except apsw.Error:
                self._conn = None  # the connection is unusable either way; the error below says why
            return self._corrupt
        err = translate(exc) if getattr(exc, "result", None) is not None else StorageError(str(exc))
        conn = self._conn
        if self._in_txn and conn is not None and conn.get_autocommit():
            # SQLite rolled the whole transaction back (a trigger's RAISE(ROLLBACK), disk full, ...):
            # the writes of this turn are gone, so its commit must fail.
            self._in_txn = False
            self._savepoints.clear()
            self._forget_caches()
            if isinstance(err, SqlError):
                self._txn_lost = err
            else:
                self._txn_lost = SqlError(str(err))
        return err

    # ---- the implicit transaction ---------------------------------------------------------------

    def _begin(self) -> None:
        self._internal("BEGIN")
        self._in_txn = True
        callback = self._on_transaction_open
        if callback is not None:
            callback()

    def _ensure_transaction(self) -> None:
        if self._conn is None:
            self._open(True)
        if not self._in_txn:
            self._begin()

    def commit(self) -> bool:
        """Commit the implicit transaction. True if it wrote anything; False if none was open or it
        only read. On failure (a deferred foreign-key violation, a transaction SQLite already
        rolled back) the transaction is rolled back and ``SqlError`` is raised."""
        lost = self._txn_lost
        if lost is not None:
            self._txn_lost = None
            if self._in_txn:
                self.rollback()
            raise SqlError(_CRITICAL_MESSAGE, code=lost.code, extended=lost.extended) from lost
        if not self._in_txn:
            return False
        if self._savepoints:
            raise InternalError(f"commit() called with savepoints still open: {self._savepoints}")
        conn = self._conn
        wrote = conn.txn_state() == apsw.SQLITE_TXN_WRITE
        try:
            if wrote and self.name is not None and not self._name_recorded:
                self._record_name()
            if wrote and self.history is not None:
                self.history.prepare_commit()
            elif wrote and self._mark_changed:
                # Writes made with history off: the history must snapshot when it is next used.
                self._internal_uncached("PRAGMA user_version = 1")
                self._mark_changed = False
            self._internal("COMMIT")
        except StorageError:
            self._txn_lost = None  # the error raised here is the report of that loss
            if self._conn is not None and not self._conn.get_autocommit():
                self._internal("ROLLBACK")
            self._in_txn = False
            self._forget_caches()
            raise
        self._in_txn = False
        if wrote:
            self.commit_count += 1
            if self.history is not None:
                self.history.after_commit()
            if self._wal_pages >= CHECKPOINT_PAGES:
                self._periodic_checkpoint()
        return wrote

    # ---- periodic checkpoints ------------------------------------------------------------------

    def _wal_hook(self, conn: apsw.Connection, name: str, pages: int) -> int:
        self._wal_pages = pages
        return apsw.SQLITE_OK

    def _periodic_checkpoint(self) -> None:
        """Move the WAL into the database file (PASSIVE: never waits for readers). The history
        is fsynced first, so a page reaches the database file only once its record is durable."""
        if not self._ckpt_idle.is_set():
            return  # one is running; the WAL keeps growing until it is done
        self._wal_pages = 0
        history = self.history
        if self.offload is None:
            if history is not None:
                history.sync()
            self._checkpoint(passive=True)
            return
        sync_history = history.sync_later() if history is not None else None
        path = str(self.path)
        self._ckpt_idle.clear()

        def job() -> None:
            try:
                if sync_history is not None:
                    sync_history()
                conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READWRITE)
                try:
                    # A fresh connection knows it is in WAL mode only after its first statement.
                    conn.execute("PRAGMA journal_mode").fetchall()
                    conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
                finally:
                    conn.close()
            except Exception as e:  # the next one retries; the WAL stays valid meanwhile
                _log.warning("checkpoint of %s failed: %s", path, e)
            finally:
                self._ckpt_idle.set()
        try:
            self.offload(job)
        except RuntimeError:  # the runtime is shutting down: do it here
            job()

    def rollback(self) -> None:
        """Drop the implicit transaction and everything written in it (and any savepoints)."""
        self._txn_lost = None
        if not self._in_txn:
            return
        self._savepoints.clear()
        self._forget_caches()
        self._in_txn = False
        if self._conn is not None and not self._conn.get_autocommit():
            self._internal("ROLLBACK")

    # ---- savepoints -----------------------------------------------------------------------------
    # Open savepoints are a stack (innermost last). Ending one also ends every savepoint opened
    # after it, as in SQLite. Ending a savepoint that has already ended is a no-op: the async
    # transaction() releases its savepoint after the closure returns even when txn.rollback()
    # already rolled it back.

    def savepoint(self) -> str:
        """Open a savepoint inside the implicit transaction; returns its name (unique per
        database, so a stale name can never end a newer savepoint)."""
        self._ensure_transaction()
        self._savepoint_serial += 1
        name = f"_cf_savepoint_{self._savepoint_serial}"
        self._open_savepoint(name)
        return name

    def release(self, name: str) -> None:
        """Keep what was written since ``savepoint()`` returned ``name``, and end the savepoint."""
        self._end_savepoint(name, rollback=False)

    def rollback_to(self, name: str) -> None:
        """Undo what was written since ``savepoint()`` returned ``name``, and end the savepoint."""
        self._end_savepoint(name, rollback=True)

    def transaction_sync(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` inside ``SAVEPOINT _cf_sync_savepoint_<depth>``; if it raises, roll back to
        the savepoint and re-raise. Nestable. Returns what ``fn`` returns."""
        self._ensure_transaction()
        name = f"_cf_sync_savepoint_{len(self._savepoints)}"
        self._open_savepoint(name)
        try:
            result = fn()
        except BaseException:
            self._end_savepoint(name, rollback=True)
            raise
        self._end_savepoint(name, rollback=False)
        return result

    def _open_savepoint(self, name: str) -> None:
        self._internal(f"SAVEPOINT {name}")
        self._savepoints.append(name)

    def _end_savepoint(self, name: str, *, rollback: bool) -> None:
        stack = self._savepoints
        if name not in stack:
            lost = self._txn_lost
            if lost is not None and not rollback:
                # SQLite rolled the whole transaction back under this savepoint: nothing to keep.
                raise SqlError(_CRITICAL_MESSAGE, code=lost.code, extended=lost.extended) from lost
            return
        index = len(stack) - 1 - stack[::-1].index(name)
        if rollback:
            self._abandon_savepoint(name)
        else:
            self._internal(f"RELEASE {name}")
        del stack[index:]

    def _abandon_savepoint(self, name: str) -> None:
        """ROLLBACK TO + RELEASE, unless the transaction is already gone."""
        if self._conn is None or self._conn.get_autocommit():
            return
        self._internal(f"ROLLBACK TO {name}")
        self._internal(f"RELEASE {name}")
        self._forget_caches()

    # ---- the alarm row ----------------------------------------------------------------------------

    def _meta_table_exists(self) -> bool:
        if self._meta_table is None:
            try:
                self._meta_table = self._conn.table_exists("main", "_cf_METADATA")
            except apsw.Error as e:
                raise self._error(e) from e
        return self._meta_table

    def _forget_caches(self) -> None:
        """What this object knows of its tables and alarm row without asking SQLite: valid for one
        connection, and only while no rollback undid a write it saw."""
        self._kv_table = self._meta_table = None
        self._alarm = _UNKNOWN

    def get_alarm(self) -> int | None:
        """The alarm time in epoch milliseconds, or None."""
        if self._conn is None and self._open(False) is None:
            return None
        alarm = self._alarm
        if alarm is not _UNKNOWN:
            return alarm  # type: ignore[return-value]
        if not self._meta_table_exists():
            alarm = None
        else:
            rows = self._internal(_ALARM_GET)
            alarm = rows[0][0] if rows else None
        self._alarm = alarm
        return alarm

    def set_alarm(self, when_ms: int) -> None:
        """Store the alarm time (epoch ms; a float is truncated) in the implicit transaction."""
        if isinstance(when_ms, bool) or not isinstance(when_ms, (int, float)):
            raise TypeError(f"alarm time must be an int of epoch milliseconds, not {type(when_ms).__name__}")
        self._ensure_transaction()
        if not self._meta_table:
            self._internal(_META_CREATE)
            self._meta_table = True
        self._alarm = _UNKNOWN  # if the statement fails
        self._internal(_ALARM_SET, (int(when_ms),))
        self._alarm = int(when_ms)

    def delete_alarm(self) -> None:
        """Remove the alarm row. A database with no file stays without one."""
        if self._conn is None and self._open(False) is None:
            return
        if not self._meta_table_exists():
            return
        self._ensure_transaction()
        self._alarm = _UNKNOWN  # if the statement fails
        self._internal(_ALARM_DELETE)
        self._alarm = None

    # ---- whole-database operations ----------------------------------------------------------------

    def delete_all(self) -> None:
        """Drop every user table, index, view and trigger, all KV data and the alarm, atomically,
        in the implicit transaction. After it commits, :meth:`discard_files_if_empty` removes the
        files."""
        if self._savepoints:
            raise StorageError(_DELETE_ALL_IN_TXN_MESSAGE)
        if self._conn is None and self._open(False) is None:
            return
        self._ensure_transaction()
        self._internal("SAVEPOINT _cf_delete_all")
        try:
            self._drop_everything()
        except BaseException:
            self._abandon_savepoint("_cf_delete_all")
            raise
        self._internal("RELEASE _cf_delete_all")
        self._kv_table = False
        self._meta_table = False
        self._alarm = None
        self._name_recorded = False

    def _drop_everything(self) -> None:
        objects = self._internal(_USER_SCHEMA)
        for kind, name, sql in objects:
            if kind == "view":
                self._internal(f"DROP VIEW IF EXISTS {_quote(name)}")
            elif kind == "trigger":
                self._internal(f"DROP TRIGGER IF EXISTS {_quote(name)}")
        # Virtual tables first: dropping one drops its shadow tables.
        for kind, name, sql in objects:
            if kind == "table" and (sql or "")[:20].upper().startswith("CREATE VIRTUAL TABLE"):
                self._internal(f"DROP TABLE IF EXISTS {_quote(name)}")
        # Dropping a parent before its children would fail an immediate foreign key; deferring the
        # checks lets every table go in any order (none are left to violate anything).
        deferred = self._internal("PRAGMA defer_foreign_keys")[0][0]
        self._internal("PRAGMA defer_foreign_keys = ON")
        remaining = [name for kind, name, _ in self._internal(_USER_SCHEMA) if kind == "table"]
        for name in remaining + ["_cf_KV", "_cf_METADATA"]:
            self._internal(f"DROP TABLE IF EXISTS {_quote(name)}")
        for name in ("sqlite_stat1", "sqlite_stat4"):
            self._internal(f"DROP TABLE IF EXISTS {name}")
        if self._internal("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'"):
            self._internal("DELETE FROM sqlite_sequence")
        if not deferred:
            self._internal("PRAGMA defer_foreign_keys = OFF")

    def _has_data(self) -> bool:
        """Whether the open database holds any user schema, KV row or alarm."""
        if self._internal(_ANY_USER_SCHEMA):
            return True
        if self._kv_ready() and self._internal(_ANY_KV):
            return True
        return self._meta_table_exists() and bool(self._internal(_ANY_METADATA))

    def _record_name(self) -> None:
        """Store :attr:`name` in key 3 if absent, inside a transaction that already writes (never
        turning a read into a write), and only if the object holds data (not after deleteAll)."""
        if self._meta_table_exists() and self._internal(_NAME_KNOWN):
            self._name_recorded = True  # the usual case after the first session: one query
            return
        if not self._has_data():
            return
        if not self._meta_table_exists():
            self._internal(_META_CREATE)
            self._meta_table = True
        self._internal(_NAME_SET, (self.name,))
        self._name_recorded = True

    def _reserved_names(self) -> set[str]:
        return {row[0] for row in self._internal(_RESERVED_NAMES)}

    @property
    def database_size(self) -> int:
        """Bytes used: page_count * page_size. An empty database (none, fresh, or emptied by
        ``delete_all``) reports 4096, the size it has when it is next created (§13.6)."""
        if self._conn is None and self._open(False) is None:
            return EMPTY_DATABASE_SIZE
        if not self._has_data():
            return EMPTY_DATABASE_SIZE
        pages = self._internal("PRAGMA page_count")[0][0]
        page_size = self._internal("PRAGMA page_size")[0][0]
        return pages * page_size

    def statistics(self) -> dict[str, Any]:
        """Counters for dashboards and tests. Never opens or creates the file."""
        stats: dict[str, Any] = {
            "path": str(self.path),
            "open": self._conn is not None,
            "in_transaction": self._in_txn,
            "savepoint_depth": len(self._savepoints),
            "commit_count": self.commit_count,
            "corrupt": self._corrupt is not None,
            "file_exists": self.path.exists(),
        }
        if self._conn is not None:
            stats["database_size"] = self.database_size
        return stats

    def __repr__(self) -> str:
        state = "corrupt" if self._corrupt else ("open" if self._conn else "closed")
        return f"<ObjectDatabase {str(self.path)!r} {state}{' in transaction' if self._in_txn else ''}>"


def _finish_close(conn: apsw.Connection, history: DetachedHistory | None,
                  files: tuple[pathlib.Path, pathlib.Path, pathlib.Path], empty: bool) -> None:
    """The end of ``close(offload=True)``, on a worker thread (the connection is no longer the
    object's): as ``close()`` does, the history is fsynced before SQLite checkpoints on close (a
    page reaches the database file only once its record is durable); an ``empty`` database is
    checkpointed and its ``files`` (database, -wal, -shm) removed."""
    discard = files if empty else None
    try:
        if history is not None:
            try:
                history.sync()
            except BaseException:
                # Not durable: keep the WAL (the next open reconciles the history with it).
                conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
                raise
        if discard is not None:
            conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
            conn.close()
            for p in discard:
                p.unlink(missing_ok=True)
            if history is not None:
                history.discarded()
    finally:
        _close_quietly(conn, files[2])
        if history is not None:
            history.close()


def _close_quietly(conn: apsw.Connection, shm: pathlib.Path) -> None:
    """Close an object's connection: SQLite checkpoints and leaves an empty ``-wal``; the ``-shm``
    file (32 KiB, rebuilt at every open anyway) is removed."""
    try:
        conn.authorizer = None  # duro's own statement (the user's authorizer refuses this PRAGMA)
        conn.execute(_BEFORE_CLOSE)
    except apsw.ConnectionClosedError:
        pass
    except apsw.Error as e:  # unusable (a damaged file): the -wal keeps what it holds
        _log.warning("closing %s: %s", shm.with_name(shm.name[:-4]), e)
    conn.close()
    try:
        shm.unlink(missing_ok=True)
    except OSError:
        pass
