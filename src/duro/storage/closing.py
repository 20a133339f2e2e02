"""Closes and checkpoints finished on a worker thread: the part of each that waits on the disk.

Owns the registry of closes in progress (opening a file again waits for its close, through
:func:`wait_closed`), the worker's half of ``DatabaseConnection.close_offloaded`` (fsync the
history, let SQLite checkpoint as the connection closes, remove an empty database's files), the
worker's half of the periodic checkpoint (:func:`checkpoint_on_worker`), and
:func:`close_quietly`, the last step of every close.

It must never start a thread itself (jobs go to the runtime's ``offload``), nor touch a
connection that is still an object's.
"""

from __future__ import annotations

import logging
import os
import pathlib
import threading
from collections.abc import Callable

import apsw

from duro.storage.durability import JournalLink
from duro.storage.journal import DetachedHistory

__all__ = ["wait_closed", "close_on_worker", "close_quietly", "closing_any", "checkpoint_on_worker"]

_log = logging.getLogger("duro.storage")

# On close: after SQLite's checkpoint, cut the WAL to zero bytes but keep the file (PERSIST_WAL),
# so the next open neither creates it again nor reads stale frames.
_BEFORE_CLOSE = "PRAGMA journal_size_limit=0"

# Databases whose close is being finished on a worker thread (``close_on_worker``): opening the
# same file again, through any connection, waits until that close is done. Per path:
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


def closing_any() -> bool:
    """Whether any close is in progress (the cheap test before :func:`wait_closed`)."""
    return bool(_closing)


def close_on_worker(conn: apsw.Connection, history: DetachedHistory | None,
                    files: tuple[pathlib.Path, pathlib.Path, pathlib.Path], empty: bool,
                    ckpt_idle: threading.Event, offload: Callable[[Callable[[], None]], None], *,
                    journal: JournalLink | None = None, lsn: int = 0) -> None:
    """Hand the end of a close to ``offload`` (or run it here if the runtime is shutting down),
    registered so that opening ``files[0]`` again waits for it. ``conn`` is no longer the
    object's; ``ckpt_idle`` is set when no periodic checkpoint of it runs."""
    path = files[0]
    done = threading.Event()
    claim = threading.Lock()

    def finish() -> None:
        try:
            ckpt_idle.wait()  # a periodic checkpoint of this database finishes first
            _finish_close(conn, history, files, empty, journal, lsn)
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


def _finish_close(conn: apsw.Connection, history: DetachedHistory | None,
                  files: tuple[pathlib.Path, pathlib.Path, pathlib.Path], empty: bool,
                  journal: JournalLink | None = None, lsn: int = 0) -> None:
    """The end of ``close_offloaded``, on a worker thread (the connection is no longer the
    object's). A page reaches the database file only once its record is durable, so SQLite's
    checkpoint on close comes after: the history's fsync, or with the node journal, the journal
    holding every commit durably (if it could not, the WAL is dropped unread and the file redone
    from the journal; otherwise the journal is told the file holds its records and syncs it in
    its next pass). An ``empty`` database is checkpointed and its ``files`` (database, -wal,
    -shm) removed."""
    if journal is not None and not journal.wait_durable(lsn):
        if history is not None:
            history.close()
        conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
        conn.close()
        journal.recover()
        return
    removed = False
    try:
        if history is not None and journal is None:
            try:
                history.sync()
            except BaseException:
                # Not durable: keep the WAL (the next open reconciles the history with it).
                conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
                raise
        if empty:
            conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
            conn.close()
            for p in files:
                p.unlink(missing_ok=True)
            removed = True
            if history is not None:
                history.discarded()
    finally:
        whole = close_quietly(conn, files[2]) or removed
        if history is not None:
            history.close()
    if journal is not None and whole:
        journal.written(lsn)  # (not whole: the records stay in the journal; the next open redoes them)


def close_quietly(conn: apsw.Connection, shm: pathlib.Path) -> bool:
    """Close an object's connection: checkpoint (leaving an empty ``-wal``), close; the ``-shm``
    file (32 KiB, rebuilt at every open anyway) is removed. True only when the checkpoint is known
    to have moved every WAL frame into the database file: SQLite's own checkpoint on close says
    nothing when it fails, so it is run, and checked, first. (With the node journal only then may
    the journal be told the file holds the object's records.)"""
    whole = False
    try:
        conn.authorizer = None  # duro's own statement (the user's authorizer refuses this PRAGMA)
        conn.execute(_BEFORE_CLOSE)
        # Not when the WAL must stay as it is (its commits are not durable elsewhere yet).
        if not conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, -1):
            log, done = conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)  # BusyError if it cannot run
            whole = log == done
            if not whole:
                _log.warning("closing %s: the checkpoint moved %d of %d WAL frames",
                             shm.with_name(shm.name[:-4]), done, log)
    except apsw.ConnectionClosedError:
        pass
    except apsw.Error as e:  # unusable (a damaged file, a failing disk): the -wal keeps what it holds
        _log.warning("closing %s: %s", shm.with_name(shm.name[:-4]), e)
    conn.close()
    try:
        shm.unlink(missing_ok=True)
    except OSError:
        pass
    return whole


def checkpoint_on_worker(path: pathlib.Path, sync_history: Callable[[], None] | None, idle: threading.Event,
                         offload: Callable[[Callable[[], None]], None]) -> None:
    """Hand a PASSIVE checkpoint of the database at ``path`` to ``offload`` (or run it here if the
    runtime is shutting down), on a connection of its own, after ``sync_history`` (the history's
    fsync: a page reaches the database file only once its record is durable). ``idle`` is
    cleared until it is done. A failure is logged: the next one retries, the WAL stays valid."""
    name = str(path)
    idle.clear()

    def job() -> None:
        try:
            if sync_history is not None:
                sync_history()
            conn = apsw.Connection(name, flags=apsw.SQLITE_OPEN_READWRITE)
            try:
                # A fresh connection knows it is in WAL mode only after its first statement.
                conn.execute("PRAGMA journal_mode").fetchall()
                conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
            finally:
                conn.close()
        except Exception as e:  # the next one retries; the WAL stays valid meanwhile
            _log.warning("checkpoint of %s failed: %s", name, e)
        finally:
            idle.set()
    try:
        offload(job)
    except RuntimeError:  # the runtime is shutting down: do it here
        job()
