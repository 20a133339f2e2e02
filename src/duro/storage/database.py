"""One Durable Object's database: a single SQLite file, opened lazily, behind one storage port.

Owns what the object's storage means above the connection: the public face the runtime and the
API use (:class:`ObjectDatabase`), savepoints for ``transaction()`` / ``transactionSync()``, the
alarm row, the object's name, ``deleteAll``, the database size, and leaving no file behind for an
object that holds nothing. The connection itself (opening, closing, checkpoints, the implicit
transaction, error translation, the authorizer rule) is the port's, in ``connection.py``; the KV
table is ``kv.py``'s and user SQL ``sql.py``'s.

Which operations create the file: a write (KV put, ``set_alarm``, a savepoint) and every SQL
``exec``, a ``SELECT`` too. Reads never do: KV get and list, ``get_alarm``, ``database_size``,
``statistics``, ``delete_alarm`` and KV deletes open an existing file or return at once. An object
that never wrote (or only ran SQL that wrote nothing) still leaves no file: an empty database is
removed when it closes (:meth:`ObjectDatabase.discard_files_if_empty`).

It must never: fsync (the runtime makes commits durable: through the node journal, or with its own
batched fdatasync of the WAL file); start threads or use asyncio; let an apsw exception escape untranslated; reach past the
port's public methods.

Hidden tables: ``_cf_KV(key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID`` (see kv.py) and
``_cf_METADATA(key INTEGER PRIMARY KEY, value BLOB)``, key 1 holding the alarm time in epoch ms.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import apsw

from duro.errors import StorageError
from duro.storage.connection import CHECKPOINT_PAGES, DatabaseConnection, wait_closed
from duro.storage.durability import History, JournalLink
from duro.storage.historyread import materialize_index
from duro.storage.journal import HistoryOptions, ObjectHistory, as_path
from duro.storage.kv import KV_TABLE, KvStore, SyncKv
from duro.storage.opening import MAX_DATABASE_BYTES, PAGE_SIZE
from duro.storage.sql import SqlStorage

__all__ = ["ObjectDatabase", "EMPTY_DATABASE_SIZE", "MAX_DATABASE_BYTES", "CHECKPOINT_PAGES", "wait_closed",
           "strip_identity"]

T = TypeVar("T")
_UNKNOWN = object()
_ALARM = object()  # the alarm row's key in the port's memo

EMPTY_DATABASE_SIZE = PAGE_SIZE  # §13.6: a fresh object, and one after deleteAll(), reports 4096

_META_TABLE = "_cf_METADATA"
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
_DELETE_ALL_IN_TXN_MESSAGE = "Cannot call deleteAll() within a transaction"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class ObjectDatabase(KvStore):
    """The storage of one object. Synchronous; one connection (:attr:`port`); opened on first use.
    The ``kv_*`` methods are :class:`~duro.storage.kv.KvStore`'s.

    Writes join an implicit transaction that stays open until :meth:`commit` (the runtime calls it
    at the end of the turn) or :meth:`rollback`. ``on_transaction_open`` is called once each time
    that transaction begins.
    """

    def __init__(self, path: str | os.PathLike[str], *,
                 on_transaction_open: Callable[[], None] | None = None, name: str | None = None,
                 history: HistoryOptions | None = None,
                 offload: Callable[[Callable[[], None]], None] | None = None,
                 journal: JournalLink | None = None, interrupt: Callable[[], bool] | None = None) -> None:
        self.path = path = as_path(path)
        # Point-in-time recovery (journal.py): None when history is off.
        self.history: History | None = ObjectHistory(path, history) if history is not None else None
        port = DatabaseConnection(path, history=self.history, on_transaction_open=on_transaction_open,
                                  offload=offload, journal=journal, interrupt=interrupt)
        super().__init__(port)
        self.wal_path = port.wal_path
        self.name = name  # recorded in _cf_METADATA key 3 (see _record_name)
        self._name_recorded = False  # on this connection
        self._savepoint_serial = 0
        self.sql = SqlStorage(port, lambda: self.database_size)
        self.kv = SyncKv(self)

    # ---- state --------------------------------------------------------------------------------

    @property
    def offload(self) -> Callable[[Callable[[], None]], None] | None:
        return self.port.offload

    @property
    def commit_count(self) -> int:
        """Commits that wrote, since this object was made."""
        return self.port.commit_count

    def row_totals(self) -> tuple[int, int]:
        """Rows read and written by user SQL and KV calls since this object was made."""
        port = self.port
        return port.rows_read, port.rows_written

    def exists(self) -> bool:
        """Whether the database file is on disk."""
        return self.path.exists()

    @property
    def is_open(self) -> bool:
        return self.port.is_open

    @property
    def in_transaction(self) -> bool:
        return self.port.txn.open

    def attached_history(self) -> History:
        """The history, in step with the database (which is opened if it exists). Raises
        StorageError when history is off."""
        if self.history is None:
            raise StorageError("point-in-time recovery is off for this project (history_retention = 0); "
                               "set history_retention to a number of days in [tool.duro] to keep history")
        if not self.port.is_open:
            self.port.open(create=False)
        return self.history

    def materialize_at(self, bookmark: str, out: str | os.PathLike[str]) -> int:
        """Write the database as of ``bookmark`` (of its history) to the file ``out``; its size in
        pages, 0 for the empty state. An unknown bookmark raises InvalidInputError."""
        history = self.attached_history()
        assert isinstance(history, ObjectHistory)
        rec = history.resolve(bookmark)
        assert history.file is not None
        return materialize_index(history.file, rec.index, as_path(out))

    def snapshot_into(self, out: str | os.PathLike[str]) -> None:
        """Write the database to the new file ``out`` without what a snapshot does not copy (see
        :func:`strip_identity`). An object with no database gives an empty file (the empty state).
        The caller commits first: an open transaction's writes would be copied."""
        path = as_path(out)
        if not self.port.backup_into(path):
            path.write_bytes(b"")
            return
        strip_identity(path)

    # ---- closing -----------------------------------------------------------------------------

    def close(self, *, offload: bool = False) -> None:
        """Close the database. The caller must have committed what it wants kept: an open
        transaction is rolled back. An empty database's files are removed.

        With ``offload`` (and an ``offload`` function), only the bookkeeping happens here: the
        part that waits on the disk (fsyncing the history, SQLite's checkpoint as the connection
        closes, removing an empty database's files) runs on the worker thread, and opening the
        file again waits until it is done."""
        port = self.port
        if not port.is_open:
            return
        try:
            port.rollback()  # also forgets a loss no commit reported
            if offload and port.offload is not None:
                # Asked here, not on the worker: a few cached statements, and measured faster
                # overall than a worker thread taking the GIL for them.
                empty = not self._has_data()
                self._name_recorded = False
                port.close_offloaded(empty)
                return
            if self.discard_files_if_empty():
                return
        finally:
            if port.is_open:
                self._name_recorded = False
                port.close()

    def discard_files_if_empty(self) -> bool:
        """If the database holds no user schema, no KV rows and no alarm, and no transaction is
        open: checkpoint, close and delete the database, ``-wal`` and ``-shm`` files.

        Returns True if the object now has no files (also when it never had any)."""
        port = self.port
        if port.corrupt is not None or port.txn.open:
            return False
        if not port.is_open:
            port.wait_closed()
            if not self.path.exists():
                port.remove_files()  # what a deleted database may have left
                return True
            if not port.open(create=False):
                return True
        if self._has_data():
            return False
        self._name_recorded = False
        port.discard()
        return True

    # ---- the implicit transaction and savepoints ----------------------------------------------

    def commit(self) -> bool:
        """Commit the implicit transaction. True if it wrote anything; False if none was open or it
        only read. On failure (a deferred foreign-key violation, a transaction SQLite already
        rolled back) the transaction is rolled back and ``SqlError`` is raised."""
        if self.name is not None and not self._name_recorded:
            return self.port.commit(self._record_name)
        return self.port.commit()

    def rollback(self) -> None:
        """Drop the implicit transaction and everything written in it (and any savepoints)."""
        self.port.rollback()

    # Ending a savepoint that has already ended is a no-op: the async transaction() releases its
    # savepoint after the closure returns even when txn.rollback() already rolled it back.

    def savepoint(self) -> str:
        """Open a savepoint inside the implicit transaction; returns its name (unique per
        database, so a stale name can never end a newer savepoint)."""
        self.port.ensure_transaction()
        self._savepoint_serial += 1
        name = f"_cf_savepoint_{self._savepoint_serial}"
        self.port.open_savepoint(name)
        return name

    def release(self, name: str) -> None:
        """Keep what was written since ``savepoint()`` returned ``name``, and end the savepoint."""
        self.port.end_savepoint(name, rollback=False)

    def rollback_to(self, name: str) -> None:
        """Undo what was written since ``savepoint()`` returned ``name``, and end the savepoint."""
        self.port.end_savepoint(name, rollback=True)

    def transaction_sync(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` inside ``SAVEPOINT _cf_sync_savepoint_<depth>``; if it raises, roll back to
        the savepoint and re-raise. Nestable. Returns what ``fn`` returns."""
        port = self.port
        port.ensure_transaction()
        name = f"_cf_sync_savepoint_{port.savepoint_depth}"
        port.open_savepoint(name)
        try:
            result = fn()
        except BaseException:
            port.end_savepoint(name, rollback=True)
            raise
        port.end_savepoint(name, rollback=False)
        return result

    # ---- the alarm row -----------------------------------------------------------------------
    # The port's memo holds the row as last read or written; a rollback empties it.

    def get_alarm(self) -> int | None:
        """The alarm time in epoch milliseconds, or None. Never creates the database file."""
        port = self.port
        if not port.is_open and not port.open(create=False):
            return None
        alarm = port.memo.get(_ALARM, _UNKNOWN)
        if alarm is not _UNKNOWN:
            return alarm  # type: ignore[no-any-return]
        if not port.table_exists(_META_TABLE):
            alarm = None
        else:
            rows = port.run_internal(_ALARM_GET)
            alarm = rows[0][0] if rows else None
        port.memo[_ALARM] = alarm
        return alarm

    def set_alarm(self, when_ms: int) -> None:
        """Store the alarm time (epoch ms; a float is truncated) in the implicit transaction."""
        if isinstance(when_ms, bool) or not isinstance(when_ms, (int, float)):
            raise TypeError(f"alarm time must be an int of epoch milliseconds, not {type(when_ms).__name__}")
        port = self.port
        port.ensure_transaction()
        self.create_meta_table()
        port.memo.pop(_ALARM, None)  # if the statement fails
        port.run_internal(_ALARM_SET, (int(when_ms),))
        port.memo[_ALARM] = int(when_ms)

    def delete_alarm(self) -> None:
        """Remove the alarm row. A database with no file stays without one."""
        port = self.port
        if not port.readable(_META_TABLE):
            return
        port.ensure_transaction()
        port.memo.pop(_ALARM, None)  # if the statement fails
        port.run_internal(_ALARM_DELETE)
        port.memo[_ALARM] = None

    def create_meta_table(self) -> None:
        """Create ``_cf_METADATA`` if this connection has not seen it (inside the open transaction)."""
        memo = self.port.memo
        if not memo.get(_META_TABLE):
            self.port.run_internal(_META_CREATE, cache=False)  # once per connection: not cached
            memo[_META_TABLE] = True

    # ---- whole-database operations -----------------------------------------------------------

    def delete_all(self) -> None:
        """Drop every user table, index, view and trigger, all KV data and the alarm, atomically,
        in the implicit transaction. After it commits, :meth:`discard_files_if_empty` removes the
        files."""
        port = self.port
        if port.savepoint_depth:
            raise StorageError(_DELETE_ALL_IN_TXN_MESSAGE)
        if not port.is_open and not port.open(create=False):
            return
        port.ensure_transaction()
        port.run_internal("SAVEPOINT _cf_delete_all")
        try:
            self._drop_everything()
        except BaseException:
            port.abandon_savepoint("_cf_delete_all")
            raise
        port.run_internal("RELEASE _cf_delete_all")
        port.memo.update({KV_TABLE: False, _META_TABLE: False, _ALARM: None, "_cf_SCHEDULES": False})
        port.counter.forget_schema()
        self._name_recorded = False

    def _drop_everything(self) -> None:
        run = self.port.run_internal
        objects = run(_USER_SCHEMA)
        for kind, name, sql in objects:
            if kind == "view":
                run(f"DROP VIEW IF EXISTS {_quote(name)}")
            elif kind == "trigger":
                run(f"DROP TRIGGER IF EXISTS {_quote(name)}")
        # Virtual tables first: dropping one drops its shadow tables.
        for kind, name, sql in objects:
            if kind == "table" and (sql or "")[:20].upper().startswith("CREATE VIRTUAL TABLE"):
                run(f"DROP TABLE IF EXISTS {_quote(name)}")
        # Dropping a parent before its children would fail an immediate foreign key; deferring the
        # checks lets every table go in any order (none are left to violate anything).
        deferred = run("PRAGMA defer_foreign_keys")[0][0]
        run("PRAGMA defer_foreign_keys = ON")
        remaining = [name for kind, name, _ in run(_USER_SCHEMA) if kind == "table"]
        for name in remaining + ["_cf_KV", "_cf_METADATA"]:
            run(f"DROP TABLE IF EXISTS {_quote(name)}")
        for name in ("sqlite_stat1", "sqlite_stat4"):
            run(f"DROP TABLE IF EXISTS {name}")
        if run("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'"):
            run("DELETE FROM sqlite_sequence")
        if not deferred:
            run("PRAGMA defer_foreign_keys = OFF")

    def _has_data(self) -> bool:
        """Whether the open database holds any user schema, KV row or alarm."""
        port = self.port
        if port.run_internal(_ANY_USER_SCHEMA, cache=False):
            return True
        if port.table_exists(KV_TABLE) and port.run_internal(_ANY_KV):
            return True
        return port.table_exists(_META_TABLE) and bool(port.run_internal(_ANY_METADATA))

    def _record_name(self) -> None:
        """Store :attr:`name` in key 3 if absent, inside a transaction that already writes (never
        turning a read into a write), and only if the object holds data (not after deleteAll).
        The port calls it from :meth:`commit`."""
        port = self.port
        if port.table_exists(_META_TABLE) and port.run_internal(_NAME_KNOWN, cache=False):
            self._name_recorded = True  # the usual case after the first session: one query
            return
        if not self._has_data():
            return
        self.create_meta_table()
        port.run_internal(_NAME_SET, (self.name,), cache=False)
        self._name_recorded = True

    @property
    def database_size(self) -> int:
        """Bytes used: page_count * page_size. An empty database (none, fresh, or emptied by
        ``delete_all``) reports 4096, the size it has when it is next created (§13.6). Never
        creates the database file."""
        port = self.port
        if not port.is_open and not port.open(create=False):
            return EMPTY_DATABASE_SIZE
        if not self._has_data():
            return EMPTY_DATABASE_SIZE
        pages = port.run_internal("PRAGMA page_count")[0][0]
        page_size = port.run_internal("PRAGMA page_size")[0][0]
        return pages * page_size

    def statistics(self) -> dict[str, Any]:
        """Counters for dashboards and tests. Never opens or creates the file."""
        port = self.port
        stats: dict[str, Any] = {
            "path": str(self.path),
            "open": port.is_open,
            "in_transaction": port.txn.open,
            "savepoint_depth": port.savepoint_depth,
            "commit_count": port.commit_count,
            "corrupt": port.corrupt is not None,
            "file_exists": self.path.exists(),
        }
        if port.is_open:
            stats["database_size"] = self.database_size
        return stats

    def __repr__(self) -> str:
        port = self.port
        state = "corrupt" if port.corrupt else ("open" if port.is_open else "closed")
        return f"<ObjectDatabase {str(self.path)!r} {state}{' in transaction' if port.txn.open else ''}>"


def strip_identity(path: str | os.PathLike[str]) -> None:
    """Remove from the standalone copy ``path`` of an object's database what belongs to the object,
    not to its data — the alarm (key 1) and the name (key 3) of ``_cf_METADATA`` — leave it in
    rollback-journal mode (one file) and fsync it."""
    conn = apsw.Connection(str(path))
    try:
        if conn.table_exists("main", _META_TABLE):
            conn.execute("DELETE FROM _cf_METADATA WHERE key IN (1, 3)")
        conn.execute("PRAGMA journal_mode=DELETE").fetchall()
    finally:
        conn.close()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
