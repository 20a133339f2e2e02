"""Point-in-time recovery on closed objects: bookmarks, restore, branch, materialise, prune.

These functions work on an object's files (``<hex>.sqlite`` and its ``<hex>.history``, see
journal.py) while no live instance has the database open: the CLI calls them with the server
stopped; the runtime calls :func:`apply_pending_restore` just before an object's database opens and
:func:`prune` from its pruning service. Every function first brings the history in step with the
database (a history that missed commits gets a snapshot), so answers are about what is on disk.

A restore never rewrites history: it writes the state at the bookmark as a new record, so it is a
new point in history and can itself be undone. Bad input (a malformed or unknown bookmark, a time
outside the retention window) raises :class:`~duro.errors.InvalidInputError` and changes nothing.

Never: run while a live connection has the database open; use asyncio or threads.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import pathlib
import shutil
from collections.abc import Iterator
from typing import Any

import apsw

from duro.errors import CorruptDatabaseError, InvalidInputError, StorageError
from duro.storage.paths import file_mode, make_dirs_durably
from duro.storage.journal import (BASE, DAY_MS, PAGE_SIZE, RESTORE, HistoryFile, HistoryOptions, ObjectHistory,
                                  fsync_dir, history_path, marker_path, materialize_index, parse_bookmark)
from duro.storage.integrity import check_file, latest_intact_index

__all__ = ["HistoryOptions", "bookmark_range", "current_bookmark", "bookmark_for_time", "restore", "branch",
           "materialize", "prune", "schedule_restore", "apply_pending_restore", "to_epoch_ms", "restore_file",
           "SNAPSHOT_MARK",
           "history_path", "marker_path"]

_SETUP = "PRAGMA page_size=4096; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"


def to_epoch_ms(t: Any) -> int:
    """Epoch milliseconds from an int/float of epoch ms or a ``datetime`` (naive = UTC)."""
    if isinstance(t, _dt.datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.timezone.utc)
        return int(t.timestamp() * 1000)
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise TypeError(f"time must be epoch milliseconds (int) or a datetime, not {type(t).__name__}")
    if isinstance(t, float) and not math.isfinite(t):
        raise TypeError(f"time must be a finite number of epoch milliseconds, not {t}")
    return int(t)


def _options(options: HistoryOptions | None) -> HistoryOptions:
    return options if options is not None else HistoryOptions()


def _connect(path: pathlib.Path) -> apsw.Connection:
    try:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE)
        conn.execute(_SETUP).fetchall()
    except apsw.Error as e:
        raise StorageError(f"cannot open database file {str(path)!r}: {e}") from e
    return conn


def _unlink(*paths: pathlib.Path) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def _side_files(db: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    return pathlib.Path(str(db) + "-wal"), pathlib.Path(str(db) + "-shm")


@contextlib.contextmanager
def _attached(db_path: str | os.PathLike[str], options: HistoryOptions | None,
              create: bool = True) -> Iterator[tuple[ObjectHistory, apsw.Connection | None]]:
    """The object's history brought in step with its database (healed if needed), and a
    connection to the database if it exists. With ``create=False`` an object with neither file
    yields a history whose ``file`` is None."""
    db = pathlib.Path(db_path)
    h = ObjectHistory(db, _options(options))
    conn = None
    try:
        if db.exists():
            conn = _connect(db)
            c = conn
            h.attach(lambda sql, b=None: c.execute(sql, b).fetchall(),
                     lambda: c.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE), True)
        elif create or history_path(db).exists():
            h.attach(None, None, False)  # type: ignore[arg-type]
            h.current()  # creates an empty history for an object that has none
        yield h, conn
    finally:
        try:
            h.sync()  # before the connection's close checkpoints
        finally:
            if conn is not None:
                conn.close()
            h.close()


def _stamp(path: pathlib.Path) -> None:
    """Clear ``user_version`` (a tool's "changed outside" mark) in a materialised database, leave
    it checkpointed and fsync it."""
    _unlink(*_side_files(path))
    conn = _connect(path)
    try:
        if conn.execute("PRAGMA user_version").fetchall()[0][0]:
            conn.execute("PRAGMA user_version = 0")
        conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
    finally:
        conn.close()
    _unlink(*_side_files(path))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- queries --------------------------------------------------------------------------------------


def bookmark_range(db_path: str | os.PathLike[str], *, options: HistoryOptions | None = None) -> tuple[str, str] | None:
    """(first, last) bookmark kept for the object, or None if it has neither database nor history."""
    with _attached(db_path, options, create=False) as (h, _):
        if h.file is None:
            return None
        first, last = h.file.first, h.file.last
        assert first is not None and last is not None
        return first.bookmark, last.bookmark


def current_bookmark(db_path: str | os.PathLike[str], *, options: HistoryOptions | None = None) -> str | None:
    """The bookmark of the object's current state, or None if it has neither database nor history."""
    with _attached(db_path, options, create=False) as (h, _):
        return h.current().bookmark if h.file is not None else None


def bookmark_for_time(db_path: str | os.PathLike[str], when: Any, *,
                      options: HistoryOptions | None = None) -> str:
    """The bookmark of the state at ``when`` (epoch ms or datetime) — the last commit at or before
    it. A time in the future or older than the retention window raises InvalidInputError."""
    ms = to_epoch_ms(when)
    with _attached(db_path, options) as (h, _):
        return h.for_time(ms).bookmark


# ---- restore, branch, materialise ----------------------------------------------------------------


def restore(db_path: str | os.PathLike[str], bookmark: str, *, options: HistoryOptions | None = None) -> str:
    """Put the object's database back to its state at ``bookmark``; returns the bookmark of the
    restore (a new point in history; the bookmark before it undoes the restore). The database is
    replaced atomically (temporary file, fsync, rename, fsync of the directory)."""
    parse_bookmark(bookmark)
    db = pathlib.Path(db_path)
    with _attached(db, options) as (h, conn):
        rec = h.resolve(bookmark)
        assert h.file is not None
        tmp = db.with_name(db.name + ".restore-tmp")
        size = materialize_index(h.file, rec.index, tmp)
        if size:
            _refuse_damaged(h.file, rec.index, bookmark, tmp)
        result = _replace(h, conn, db, tmp, size)
        if size:
            problems = check_file(db)
            if problems:  # the file was written from a state checked just before: a disk fault
                raise CorruptDatabaseError(
                    f"the restore to {bookmark} wrote {str(db)!r}, but the file reads back damaged "
                    f"({problems[0]}): the disk did not keep what was written. Check the disk; "
                    f"the restore can be run again")
        return result


def restore_file(db_path: str | os.PathLike[str], source: str | os.PathLike[str], *,
                 options: HistoryOptions | None = None) -> str:
    """Replace the object's database with a copy of the SQLite file ``source`` (a snapshot of
    another object; an empty file is the empty state), recorded as a restore like :func:`restore`.
    Returns the restore's bookmark. A missing ``source`` raises InvalidInputError, changing nothing."""
    src = pathlib.Path(source)
    if not src.is_file():
        raise InvalidInputError(f"the snapshot file {str(src)!r} no longer exists")
    db = pathlib.Path(db_path)
    with _attached(db, options) as (h, conn):
        tmp = db.with_name(db.name + ".restore-tmp")
        shutil.copyfile(src, tmp)
        return _replace(h, conn, db, tmp, tmp.stat().st_size // PAGE_SIZE)


def _replace(h: ObjectHistory, conn: apsw.Connection | None, db: pathlib.Path, tmp: pathlib.Path,
             size: int) -> str:
    """Make ``tmp`` (``size`` pages; 0: the empty state) the database, and record it in the history."""
    hf = h.file
    assert hf is not None and hf.last is not None
    seq = hf.last.seq + 1
    if conn is not None:
        conn.close()  # the last connection: checkpoints and removes the WAL
    wal, shm = _side_files(db)
    if size == 0:
        _unlink(tmp, db, wal, shm)
        fsync_dir(db.parent)
        hf.append(seq, h.now_ms(), 0, {}, flags=BASE | RESTORE)
    else:
        _stamp(tmp)
        changed = _changed_pages(db, tmp)
        _unlink(wal, shm)
        os.replace(tmp, db)
        fsync_dir(db.parent)
        if changed is None:
            hf.append_file_snapshot(seq, h.now_ms(), db, flags=RESTORE)
        else:  # only what differs from the state before: restoring an hour back stays cheap
            hf.append(seq, h.now_ms(), size, changed, flags=RESTORE)
    hf.fsync()
    return hf.last.bookmark


def _refuse_damaged(hf: HistoryFile, index: int, bookmark: str, tmp: pathlib.Path,
                    what: str = "restore to") -> None:
    """Raise (after removing ``tmp``) if the state ``tmp`` holds, the history's at ``index``,
    fails integrity_check: restoring it would report success and keep the damaged pages. That
    happens when a file damaged on disk was taken into the history (a snapshot of a file that
    changed outside the journal). The message names the latest intact bookmark before it."""
    problems = check_file(tmp)
    if not problems:
        return
    tmp.unlink(missing_ok=True)
    good = latest_intact_index(hf, index, tmp)
    hint = ("no earlier state in the history is intact either: the object cannot be repaired from "
            "its history; `duro objects export` keeps what can still be read" if good is None else
            f"the latest intact state before it is bookmark {hf.record(good).bookmark}; restore to that "
            f"(writes made after it are lost)")
    raise CorruptDatabaseError(
        f"cannot {what} {bookmark}: the history's state at that point is itself damaged "
        f"({'; '.join(problems[:3])}). A database file already damaged on disk was recorded into the "
        f"history there, so using it would keep the damaged pages. No database was changed; "
        f"{hint}")


_MAX_DELTA_PAGES = 16384  # 64 MiB: a restore that changes more is recorded as a new base


def _changed_pages(old: pathlib.Path, new: pathlib.Path) -> dict[int, bytes] | None:
    """The pages of ``new`` that differ from ``old`` (both checkpointed files), or None when
    ``old`` is missing or too much differs."""
    if not old.exists():
        return None
    changed: dict[int, bytes] = {}
    step = 256 * PAGE_SIZE
    with open(old, "rb") as a, open(new, "rb") as b:
        offset = 0
        while True:
            x, y = a.read(step), b.read(step)
            if not y:
                return changed
            if x != y:
                for i in range(0, len(y), PAGE_SIZE):
                    if x[i:i + PAGE_SIZE] != y[i:i + PAGE_SIZE]:
                        changed[(offset + i) // PAGE_SIZE + 1] = y[i:i + PAGE_SIZE]
                if len(changed) > _MAX_DELTA_PAGES:
                    return None
            offset += len(y)


def branch(src_db_path: str | os.PathLike[str], dst_db_path: str | os.PathLike[str], bookmark: str, *,
           options: HistoryOptions | None = None) -> str:
    """Create a new object at ``dst_db_path`` whose database starts as ``src`` was at ``bookmark``,
    with a history of its own. Returns the new object's first bookmark. The destination must not
    exist."""
    parse_bookmark(bookmark)
    dst = pathlib.Path(dst_db_path)
    if dst.exists() or history_path(dst).exists():
        raise InvalidInputError(f"cannot branch into {str(dst)!r}: that object already has data; "
                                "choose a new object")
    with _attached(src_db_path, options) as (h, _):
        rec = h.resolve(bookmark)
        assert h.file is not None
        make_dirs_durably(dst.parent)
        tmp = dst.with_name(dst.name + ".branch-tmp")
        size = materialize_index(h.file, rec.index, tmp)
        if size:
            _refuse_damaged(h.file, rec.index, bookmark, tmp, "branch from")
        now = h.now_ms()
    hf = HistoryFile.open(history_path(dst), create=True)
    assert hf is not None
    try:
        if size == 0:
            tmp.unlink()
            hf.append(0, now, 0, {}, flags=BASE)
        else:
            _stamp(tmp)
            os.replace(tmp, dst)
            hf.append_file_snapshot(1, now, dst, flags=RESTORE)
        hf.fsync()
        fsync_dir(dst.parent)
        assert hf.last is not None
        return hf.last.bookmark
    finally:
        hf.close()


def materialize(db_path: str | os.PathLike[str], bookmark: str, out_path: str | os.PathLike[str], *,
                options: HistoryOptions | None = None) -> int:
    """Write the object's database as of ``bookmark`` to ``out_path`` (a standalone SQLite file;
    0 bytes for the empty state). Changes nothing of the object. Returns the size in bytes."""
    parse_bookmark(bookmark)
    out = pathlib.Path(out_path)
    with _attached(db_path, options) as (h, _):
        rec = h.resolve(bookmark)
        assert h.file is not None
        tmp = out.with_name(out.name + ".tmp")
        size = materialize_index(h.file, rec.index, tmp)
    os.replace(tmp, out)
    return size * 4096


# ---- restores scheduled by a live object ---------------------------------------------------------


# A marker naming a snapshot file instead of a bookmark: ``snapshot <path>``.
SNAPSHOT_MARK = "snapshot "


def schedule_restore(db_path: str | os.PathLike[str], bookmark: str) -> None:
    """Leave a marker so that the next open of the database restores it to ``bookmark`` (or, for
    ``SNAPSHOT_MARK + path``, replaces it with that snapshot file)."""
    marker = marker_path(db_path)
    tmp = marker.with_name(marker.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, file_mode())
    try:
        os.write(fd, (bookmark + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, marker)
    fsync_dir(marker.parent)


def apply_pending_restore(db_path: str | os.PathLike[str], options: HistoryOptions) -> str | None:
    """Carry out a restore left by :func:`schedule_restore`, if any; returns the restore's bookmark.
    The marker is removed either way; a restore that cannot be done raises StorageError and leaves
    the database as it was."""
    marker = marker_path(db_path)
    try:
        bookmark = marker.read_text().strip()
    except FileNotFoundError:
        return None
    try:
        if bookmark.startswith(SNAPSHOT_MARK):
            return restore_file(db_path, bookmark[len(SNAPSHOT_MARK):], options=options)
        return restore(db_path, bookmark, options=options)
    except InvalidInputError as e:
        what = "on_next_session_restore()" if bookmark.startswith(SNAPSHOT_MARK) else \
            "on_next_session_restore_bookmark()"
        raise StorageError(f"the restore to {bookmark!r} scheduled by {what} "
                           f"was not done and has been dropped ({e}); the database is unchanged") from e
    finally:
        marker.unlink(missing_ok=True)
        fsync_dir(marker.parent)


# ---- retention ------------------------------------------------------------------------------------


def prune(db_path: str | os.PathLike[str], *, options: HistoryOptions | None = None,
          live: ObjectHistory | None = None) -> bool:
    """Drop history older than the retention window: the last state at or before the window's
    start becomes the new base (bookmarks from then on stay valid). A history whose object is
    empty and whose every record is older than the window is removed. ``live`` is the history of
    an open database (its file is reopened afterwards). Returns True if the file changed."""
    opts = live.options if live is not None else _options(options)
    db = pathlib.Path(db_path)
    path = history_path(db)
    hf = live.file if live is not None and live.file is not None else HistoryFile.open(path)
    if hf is None:
        return False
    owned = live is None or live.file is not hf
    try:
        boundary = int(opts.now_ms()) - opts.retention_ms
        k = hf.find_time(boundary)
        last = hf.last
        if k is None or last is None:
            return False
        if k == len(hf) - 1 and last.db_pages == 0 and not db.exists():
            hf.close()
            path.unlink(missing_ok=True)
            fsync_dir(path.parent)
            if live is not None:
                live.file = None
            return True
        if k == 0:
            return False
        rec = hf.record(k)
        tmp_path = path.with_name(path.name + ".prune-tmp")
        tmp_path.unlink(missing_ok=True)
        new = HistoryFile.open(tmp_path, create=True)
        assert new is not None
        try:
            if rec.is_base:
                new.copy_records_from(hf, k)
            else:
                state = path.with_name(path.name + ".prune-state")
                try:
                    size = materialize_index(hf, k, state)
                    new.append_file_snapshot(rec.seq, rec.ms, state if size else None, tag=rec.tag)
                finally:
                    state.unlink(missing_ok=True)
                new.copy_records_from(hf, k + 1)
            new.fsync()
        finally:
            new.close()
        os.replace(tmp_path, path)
        fsync_dir(path.parent)
        hf.close()
        if live is not None:
            live.file = None  # reopened on next use
        return True
    finally:
        if owned:
            hf.close()


def retention_days(options: HistoryOptions) -> float:
    return options.retention_ms / DAY_MS
