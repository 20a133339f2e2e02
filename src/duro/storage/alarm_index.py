"""The node's alarm index: ``DATA/alarms.sqlite``, one row per object that may have an alarm.

It lets the scheduler find due alarms without opening every object's database. A row says "look at
this object by ``due_ms``" (and, while a failed alarm waits for its retry, which alarm time failed
and how often); the object's own ``_cf_METADATA`` alarm row stays the truth. Which writes may go
here when, so that no alarm is ever lost, is argued in ``runtime/alarms.py``.

Synchronous, one connection, WAL with ``synchronous=NORMAL``: a commit is in the OS once
:meth:`apply` returns (it survives a crash of the process); the runtime makes it durable against
power loss by fsyncing :attr:`wal_path` through its barrier. This module never fsyncs, never uses
asyncio, and never opens an object's database except in :func:`scan_object_alarms`.
"""

from __future__ import annotations

import os
import pathlib
from typing import Iterable, Iterator, NamedTuple

import apsw

from duro.errors import StorageError
from duro.storage.database import ObjectDatabase
from duro.storage.paths import make_dirs_durably, precreate

__all__ = ["AlarmIndex", "IndexRow", "scan_object_alarms"]

_SCHEMA = """
PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
CREATE TABLE IF NOT EXISTS alarms (
    namespace    TEXT NOT NULL,
    object_id    TEXT NOT NULL,
    name         TEXT,
    due_ms       INTEGER NOT NULL,
    scheduled_ms INTEGER,
    retries      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, object_id)
) WITHOUT ROWID;
"""
_UPSERT = ("INSERT INTO alarms (namespace, object_id, name, due_ms, scheduled_ms, retries) VALUES (?, ?, ?, ?, ?, ?) "
           "ON CONFLICT (namespace, object_id) DO UPDATE SET name = excluded.name, due_ms = excluded.due_ms, "
           "scheduled_ms = excluded.scheduled_ms, retries = excluded.retries")
_DELETE = "DELETE FROM alarms WHERE namespace = ? AND object_id = ?"


class IndexRow(NamedTuple):
    namespace: str
    object_id: str
    name: str | None
    due_ms: int
    scheduled_ms: int | None = None
    retries: int = 0


class AlarmIndex:
    """``alarms.sqlite``: :meth:`load` at start, :meth:`apply` batches of upserts and deletes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = pathlib.Path(path)
        self.wal_path = pathlib.Path(str(self.path) + "-wal")
        self.existed = self.path.exists()
        make_dirs_durably(self.path.parent)
        try:
            precreate(self.path)
            self._conn = apsw.Connection(str(self.path))
            # Worker processes share the index (each writes only its own objects' rows).
            self._conn.setbusytimeout(10_000)
            self._conn.execute(_SCHEMA).fetchall()
        except apsw.Error as e:
            raise StorageError(f"cannot open the alarm index {str(self.path)!r}: {e}") from e
        self.commits = 0

    def load(self) -> list[IndexRow]:
        try:
            rows = self._conn.execute(
                "SELECT namespace, object_id, name, due_ms, scheduled_ms, retries FROM alarms").fetchall()
        except apsw.Error as e:
            raise StorageError(f"reading the alarm index failed: {e}") from e
        return [IndexRow(*r) for r in rows]

    def apply(self, upserts: Iterable[IndexRow], deletes: Iterable[tuple[str, str]]) -> None:
        """Write the rows and remove the keys in one transaction (committed, not fsynced)."""
        up = list(upserts)
        dl = list(deletes)
        if not up and not dl:
            return
        conn = self._conn
        try:
            with conn:
                if dl:
                    conn.executemany(_DELETE, dl)
                if up:
                    conn.executemany(_UPSERT, up)
        except apsw.Error as e:
            raise StorageError(f"writing the alarm index failed: {e}") from e
        self.commits += 1

    def close(self) -> None:
        self._conn.close()


def scan_object_alarms(do_dir: str | os.PathLike[str]) -> Iterator[IndexRow]:
    """Rebuild the index from the objects themselves: open every ``do/<namespace>/<id>.sqlite``,
    read its alarm row. Slow (one open per object); used only when ``alarms.sqlite`` is missing."""
    root = pathlib.Path(do_dir)
    if not root.is_dir():
        return
    for ns_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(ns_dir.glob("*.sqlite")):
            db = ObjectDatabase(path)
            try:
                when = db.get_alarm()
            except StorageError:
                continue  # a damaged object reports itself when it is used
            finally:
                db.close()
            if when is not None:
                yield IndexRow(ns_dir.name, path.stem, None, int(when))
