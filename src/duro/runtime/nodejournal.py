"""The node journal: one fdatasync makes the commits of every object on the node durable.

Each write commit of an object becomes a record (the pages the commit wrote, its identity, its
commit sequence, checksummed; format in :mod:`duro.storage.journalfile`) appended to the node's
journal. One thread writes whatever was appended since its last write as one ``write`` and one
``fdatasync``: every commit of every object in that batch is then durable, and the futures
:meth:`NodeJournal.append` handed out resolve. Object database files need no fsync on the commit
path; they are synced in the background (when their WAL is checkpointed, and when they close), and
only then does a SYNCED marker let the journal forget their records. A segment is deleted once
every record in it is covered by a durable marker.

At start, :func:`~duro.runtime.journalrecovery.recover` redoes every record newer than its
object's last marker (after a crash or a power cut) and removes WAL files that may hold commits
the journal never acknowledged; the journal then starts a new segment. The background pass that
syncs object files is :mod:`duro.runtime.filesync`'s.

It is also the node's :class:`~duro.storage.durability.Barrier` for files that are not journaled
(the alarm index's WAL): ``submit(path)`` fdatasyncs ``path`` in the next flush.

Never: block the event loop on the disk (except :meth:`_Link.wait_durable`, which a hot object's
checkpoint calls once per ~1,000 WAL pages), or hand a caller a bare ``OSError``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import pathlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import CorruptDatabaseError, StorageError
from ..storage.durability import BarrierStatistics
from ..storage.journalfile import (CLEAN, COMMIT, SYNCED, Capture, encode_commit, encode_marker, pending_redo,
                                   redo, scan_segments, segment_name, segment_paths)
from ..storage.paths import file_mode, fsync_dir
from .barrier import failure_copy, sync_path
from .events import batch_histograms
from .filesync import FileSync
from .journalrecovery import RecoveryReport, check_writable, recover

log = logging.getLogger("duro.journal")

__all__ = ["NodeJournal", "SEGMENT_BYTES"]

SEGMENT_BYTES = 64 << 20


@dataclass
class _Segment:
    path: pathlib.Path
    fd: int
    size: int = 0
    keys: dict[str, int] = field(default_factory=dict)  # key -> its last COMMIT lsn in here
    frozen: bool = False  # kept from before the start (an object in it could not be recovered)


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` (a write may take fewer than asked: a full disk part-way)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.ENOSPC, "no byte written")
        view = view[n:]


def _new_segment(folder: pathlib.Path, first_lsn: int) -> _Segment:
    """Open (creating it, durably named) the segment whose first record is ``first_lsn``."""
    path = folder / segment_name(first_lsn)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, file_mode())
    try:
        fsync_dir(folder)
        return _Segment(path, fd, os.fstat(fd).st_size)
    except BaseException:
        os.close(fd)
        raise


class NodeJournal:
    """The node journal of one data directory (module doc). Used from the event loop's thread,
    except :class:`_Link`'s blocking methods and ``mark_synced``, which worker threads call."""

    mode = "fsync"

    def __init__(self, data_dir: str | os.PathLike[str], *, history: bool = True,
                 segment_bytes: int = SEGMENT_BYTES, folder: str | None = None,
                 owns: Callable[[str], bool] | None = None) -> None:
        self.data_dir = pathlib.Path(data_dir).resolve()
        self._dir_prefix = os.path.join(str(self.data_dir), "")  # "<data dir>/", for key_of
        # One process: ``journal/``; worker k of several: ``journal/w<k>`` (it holds only the
        # records of the objects that worker owns; ``owns`` says which those are).
        self.folder = self.data_dir / "journal" / folder if folder else self.data_dir / "journal"
        self.owns = owns
        self.history = history
        self.segment_bytes = segment_bytes
        self._cond = threading.Condition(threading.Lock())
        self._buf: list[bytes] = []
        self._batch_keys: list[str] = []  # keys of the COMMIT records in _buf (for failures, segment keys)
        self._batch_lsns: list[int] = []
        self._markers: list[tuple[str, int]] = []  # SYNCED markers in _buf
        self._waiters: list[tuple[asyncio.Future[None], str | None]] = []  # (future, key or None for a path)
        self._paths: dict[str, bool] = {}
        # Group commit: the writer takes a batch only once the loop has run every callback that
        # was ready when the batch's first record came (``_kick``, scheduled once per batch), so
        # the commits of one loop iteration share one write and one fdatasync.
        self._go = False
        self._kick_scheduled = False
        self._next_lsn = 1
        self._last: dict[str, int] = {}  # key -> lsn of its last COMMIT record appended
        self._processed = 0  # every record up to here was written and synced, or failed
        self._failed: dict[str, StorageError] = {}  # key -> why its last record was not made durable
        self._synced: dict[str, int] = {}  # key -> through-lsn of its last durable SYNCED marker
        self._corrupt: dict[str, str] = {}
        # Object files written (checkpointed or closed) but not yet synced: a pass every
        # SYNC_INTERVAL syncs them all at once, then writes their SYNCED markers: closes and
        # checkpoints never wait for a disk sync.
        self._file_sync = FileSync(self.data_dir, self.mark_synced)
        self._segments: list[_Segment] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self._closed = False
        self._crash: BaseException | None = None
        self.report: RecoveryReport | None = None
        # statistics
        self.commits = 0
        self.flushes = 0
        self.synced_files = 0
        self.bytes_written = 0
        # For /metrics; observed on the writer thread only.
        self.batch_commits, self.fsync_seconds = batch_histograms()

    # ------------------------------------------------------------------ life
    def open(self) -> RecoveryReport:
        """Recover the data directory, then open a fresh segment. Call before any object opens."""
        if self.report is not None:
            return self.report
        check_writable(self.folder)
        report = recover(self.data_dir, history=self.history, folder=self.folder, owns=self.owns)
        self.report = report
        self._next_lsn = report.next_lsn
        self._processed = report.next_lsn - 1
        self._corrupt = dict(report.corrupt)
        if report.corrupt:
            # Kept as they are until the damaged objects are dealt with: nothing new goes in them.
            for p in segment_paths(self.folder):
                seg = _Segment(p, -1, frozen=True)
                self._segments.append(seg)
            self._last = dict(report.last)
        else:
            # Every object file holds its records (a clean stop, or redone): start afresh.
            for p in segment_paths(self.folder):
                p.unlink(missing_ok=True)
        self._open_segment()
        return report

    def _open_segment(self) -> None:
        try:
            seg = _new_segment(self.folder, self._next_lsn)
        except OSError as e:
            path = self.folder / segment_name(self._next_lsn)
            raise StorageError(f"cannot create journal segment {str(path)!r}: {e.strerror or e}") from e
        self._segments.append(seg)

    def start(self) -> None:
        if self._thread is not None:
            return
        if self.report is None:
            self.open()
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="duro-journal", daemon=True)
        self._thread.start()
        self._file_sync.start()

    async def close(self) -> None:
        """Write what is pending, then (every object having been closed and synced) a CLEAN marker;
        stop the thread. Idempotent."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._file_sync.stop)
        await loop.run_in_executor(None, self.sync_files)  # every object file written: synced, marked
        await loop.run_in_executor(None, self.wait_processed, self._next_lsn - 1)
        with self._cond:
            # CLEAN only if every object's file holds all its records (each close synced it).
            clean = all(self._synced.get(k, 0) >= lsn for k, lsn in self._last.items())
            if self._thread is not None and self._crash is None and clean and not self._corrupt:
                self._buf.append(encode_marker(CLEAN, self._take_lsn()))
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            await loop.run_in_executor(None, self._thread.join)
        self._closed = True
        for seg in self._segments:
            if seg.fd >= 0:
                os.close(seg.fd)
                seg.fd = -1
        if self._crash is not None:
            raise self._crash

    # ------------------------------------------------------------------ appending (event loop)
    def key_of(self, db_path: str | os.PathLike[str]) -> str:
        # Every wake asks (``link``): a path object below the data directory is cut as a string
        # (its text is already normalized), which PurePath.relative_to would do at several times
        # the cost; anything else takes the general way.
        if isinstance(db_path, pathlib.PurePath):
            text = str(db_path)
            prefix = self._dir_prefix
            if text.startswith(prefix) and len(text) > len(prefix):
                return text[len(prefix):]
        return str(pathlib.Path(db_path).relative_to(self.data_dir))

    def link(self, db_path: str | os.PathLike[str]) -> "_Link":
        """The handle one object's connection uses (``JournalLink``)."""
        return _Link(self, self.key_of(db_path))

    def _take_lsn(self) -> int:
        lsn = self._next_lsn
        self._next_lsn = lsn + 1
        return lsn

    def append(self, key: str, capture: Capture) -> asyncio.Future[None]:
        """Append one commit of ``key``; the future resolves once it is durable, or fails with a
        StorageError (the object must then reset: see :meth:`_Link.recover`)."""
        self.commits += 1
        loop = self._loop or asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if self._closed or self._closing:
            raise RuntimeError("the node journal is closed")
        if self._thread is None:
            self.start()
        with self._cond:
            failed = self._failed.get(key)
            if failed is not None:
                fut.set_exception(failure_copy(failed))
                return fut
            lsn = self._take_lsn()
            self._buf.append(encode_commit(lsn, self._last.get(key, 0), key.encode(), capture))
            self._last[key] = lsn
            self._batch_keys.append(key)
            self._batch_lsns.append(lsn)
            self._waiters.append((fut, key))
        if not self._kick_scheduled:
            self._kick_scheduled = True
            loop.call_soon(self._kick)
        return fut

    def _kick(self) -> None:
        self._kick_scheduled = False
        with self._cond:
            self._go = True
            self._cond.notify()

    def submit(self, path: str, *, sync_dir: bool = False) -> asyncio.Future[None] | None:
        """:class:`~duro.storage.durability.Barrier`: fdatasync ``path`` in the next flush."""
        self.commits += 1
        if self._closed or self._closing:
            raise RuntimeError("durability barrier is closed")
        if self._thread is None:
            self.start()
        fut: asyncio.Future[None] = (self._loop or asyncio.get_running_loop()).create_future()
        with self._cond:
            self._paths[path] = self._paths.get(path, False) or sync_dir
            self._waiters.append((fut, None if not path else "\0" + path))
            self._go = True
            self._cond.notify()
        return fut

    def mark_synced(self, key: str, through: int) -> int:
        """``key``'s file holds every record up to ``through``, durably (any thread). Returns the
        marker's lsn."""
        with self._cond:
            if self._closed or self._crash is not None:
                return 0
            lsn = self._take_lsn()
            self._buf.append(encode_marker(SYNCED, lsn, key.encode(), through))
            self._markers.append((key, through))
            self._go = True
            self._cond.notify()
            return lsn

    # ------------------------------------------------------------------ syncing object files
    def written(self, key: str, through: int) -> None:
        """``key``'s database file (and its history, and its name in its folder) now hold every
        record up to ``through``, written but not synced (any thread). The next sync pass makes
        them durable, then marks them synced."""
        self._file_sync.written(key, through)

    def sync_files(self) -> int:
        """One sync pass now (:meth:`FileSync.sync_files`); how many objects were marked synced."""
        return self._file_sync.sync_files()

    def wait_processed(self, lsn: int) -> None:
        """Block until every record up to ``lsn`` was written and synced (or failed)."""
        with self._cond:
            self._go = True  # someone waits: do not wait for the loop's kick
            self._cond.notify()
            while self._processed < lsn and self._crash is None:
                if self._thread is None or not self._thread.is_alive():
                    self._flush_inline()
                    continue
                self._cond.wait(0.5)

    # ------------------------------------------------------------------ the writer thread
    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not ((self._buf or self._paths) and self._go) and not self._closing:
                        self._cond.wait()
                    if not self._buf and not self._paths and self._closing:
                        return
                    batch = self._take_batch()
                self._flush(*batch)
        except BaseException as e:  # our bug: fail everything that waits, say so, refuse new work
            log.error("the node journal crashed: %r", e, exc_info=e)
            with self._cond:
                self._crash = e
                waiters, self._waiters = self._waiters, []
                self._processed = self._next_lsn
                self._cond.notify_all()
            self._settle(waiters, e, {})

    def _take_batch(self) -> tuple[Any, ...]:
        self._go = False
        batch = (self._buf, self._batch_keys, self._batch_lsns, self._markers, self._waiters, self._paths,
                 self._next_lsn - 1)
        self._buf, self._batch_keys, self._batch_lsns, self._markers, self._waiters, self._paths = [], [], [], [], [], {}
        return batch

    def _flush_inline(self) -> None:
        """Flush on the calling thread (the writer thread is not running: start-up or shutdown).
        Called with the lock held."""
        batch = self._take_batch()
        self._cond.release()
        try:
            self._flush(*batch)
        finally:
            self._cond.acquire()

    def _flush(self, buf: list[bytes], keys: list[str], lsns: list[int], markers: list[tuple[str, int]],
               waiters: list[tuple[asyncio.Future[None], str | None]], paths: dict[str, bool], upto: int) -> None:
        error: StorageError | None = None
        seg = self._segments[-1]
        if buf:
            data = b"".join(buf)
            try:
                if seg.size and seg.size + len(data) > self.segment_bytes:
                    seg = self._rotate()
                t0 = time.perf_counter()
                _write_all(seg.fd, data)
                os.fdatasync(seg.fd)
                self.fsync_seconds.observe(time.perf_counter() - t0)
                self.batch_commits.observe(len(keys))
                seg.size += len(data)
                self.bytes_written += len(data)
            except OSError as e:
                error = StorageError(f"the commit could not be made durable: writing the journal segment "
                                     f"{str(seg.path)!r} failed: {e.strerror or e}")
                error.__cause__ = e
                try:
                    os.ftruncate(seg.fd, seg.size)  # the records of this batch are not in the journal
                except OSError:
                    pass
        path_errors: dict[str, BaseException] = {}
        for path, sync_dir in paths.items():
            try:
                sync_path(path, sync_dir)
            except StorageError as e:
                path_errors[path] = e
        with self._cond:
            if error is None:
                for key, lsn in zip(keys, lsns):
                    seg.keys[key] = lsn
                for key, through in markers:
                    if through > self._synced.get(key, 0):
                        self._synced[key] = through
            else:
                for key in keys:
                    self._failed[key] = error
            self._processed = max(self._processed, upto)
            self.flushes += 1
            self.synced_files += 1 + len(paths)
            self._cond.notify_all()
        if waiters:
            self._settle_soon(waiters, error, path_errors)
        if error is None and (markers or seg is not self._segments[0]):
            self._drop_segments()

    def _rotate(self) -> _Segment:
        old = self._segments[-1]
        os.close(old.fd)
        old.fd = -1
        with self._cond:
            first = self._processed + 1
        seg = _new_segment(self.folder, first)
        self._segments.append(seg)
        return seg

    def _drop_segments(self) -> None:
        """Delete every full segment whose records are all covered by durable markers."""
        with self._cond:
            synced = self._synced
            if self._corrupt:
                return
            drop = [s for s in self._segments[:-1]
                    if all(synced.get(k, 0) >= lsn for k, lsn in s.keys.items())]
            for s in drop:
                self._segments.remove(s)
        for s in drop:
            try:
                s.path.unlink(missing_ok=True)
            except OSError as e:
                log.warning("cannot delete journal segment %s: %s", s.path, e)

    def _settle_soon(self, waiters: list[tuple[asyncio.Future[None], str | None]], error: BaseException | None,
                     path_errors: dict[str, BaseException]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._settle, waiters, error, path_errors)
        except RuntimeError:  # the loop closed meanwhile
            pass

    @staticmethod
    def _settle(waiters: list[tuple[asyncio.Future[None], str | None]], error: BaseException | None,
                path_errors: dict[str, BaseException]) -> None:
        for fut, who in waiters:
            if fut.done():
                continue
            if who is not None and who.startswith("\0"):
                failure = path_errors.get(who[1:])
            else:
                failure = error
            if failure is not None:
                fut.set_exception(failure_copy(failure))
            else:
                fut.set_result(None)

    # ------------------------------------------------------------------ keeping the journal small
    def pinning_keys(self) -> list[str]:
        """Keys whose records keep the oldest full segment alive: the runtime checkpoints those
        objects that are open (a closed object was synced when it closed)."""
        with self._cond:
            if len(self._segments) < 2 or self._segments[0].frozen:
                return []
            synced = self._synced
            return [k for k, lsn in self._segments[0].keys.items() if synced.get(k, 0) < lsn]

    def read(self, key: str, after: int = 0) -> list[tuple[int, Capture]]:
        """``key``'s COMMIT records with an lsn above ``after``, oldest first, as they are on disk
        now (what was acknowledged; a record still being written is not there yet). Records the
        journal has dropped (covered by a durable SYNCED marker in a deleted segment) are gone."""
        self.wait_processed(self._next_lsn - 1)
        with self._cond:
            paths = [s.path for s in self._segments]
        scan = scan_segments(paths)
        if key in scan.corrupt:
            raise CorruptDatabaseError(f"the journal records of {key} are damaged: {scan.corrupt[key]}")
        return [(r.lsn, r.capture()) for r in scan.records if r.kind == COMMIT and r.key == key and r.lsn > after]

    def statistics(self) -> BarrierStatistics:
        with self._cond:
            return {"mode": self.mode, "commits": self.commits, "flushes": self.flushes,
                    "synced_files": self.synced_files, "pending_files": len(self._paths)}

    def journal_statistics(self) -> dict[str, int]:
        """The journal's own counters: segments on disk, bytes written, records not yet synced."""
        with self._cond:
            return {"segments": len(self._segments), "bytes_written": self.bytes_written,
                    "last_lsn": self._next_lsn - 1, "durable_lsn": self._processed,
                    "objects_failed": len(self._failed), "objects_corrupt": len(self._corrupt)}


class _Link:
    """One object's handle on the journal (:class:`~duro.storage.durability.JournalLink`)."""

    __slots__ = ("journal", "key")

    def __init__(self, journal: NodeJournal, key: str) -> None:
        self.journal = journal
        self.key = key

    def append(self, capture: Capture) -> asyncio.Future[None]:
        return self.journal.append(self.key, capture)

    def position(self) -> int:
        return self.journal._last.get(self.key, 0)

    def wait_durable(self, lsn: int) -> bool:
        """Block until the record ``lsn`` of this object was written: True if it is durable."""
        j = self.journal
        if lsn:
            j.wait_processed(lsn)
        return self.key not in j._failed and j._crash is None

    def written(self, through: int) -> None:
        """This object's file (and history) now hold every record up to ``through``, written but
        not synced: the journal syncs them in its next pass, then may drop the records."""
        self.journal.written(self.key, through)

    def synced(self, through: int, *, durable: bool = False) -> None:
        """This object's file now holds every record up to ``through`` on stable storage. With
        ``durable`` (before the file is changed outside the journal: a restore, an admin write),
        first sync every file written so far, then wait until the journal has the marker."""
        if durable:
            self.journal.sync_files()
        lsn = self.journal.mark_synced(self.key, through)
        if durable and lsn:
            self.journal.wait_processed(lsn)

    def recover(self) -> None:
        """After a record of this object could not be made durable: drop its WAL (which holds the
        commit) and redo its file from the journal as it is on disk. The object can then open."""
        j = self.journal
        j.wait_processed(j._next_lsn - 1)
        scan = scan_segments([s.path for s in j._segments])
        todo, corrupt = pending_redo(scan)
        if self.key in corrupt:
            raise CorruptDatabaseError(f"object {self.key} cannot be recovered: {corrupt[self.key]}")
        records = todo.get(self.key, [])
        redo(j.data_dir, self.key, records, history=j.history)
        with j._cond:
            j._failed.pop(self.key, None)
            if records:
                j._last[self.key] = records[-1].lsn
            else:
                j._last.pop(self.key, None)

    def check_open(self) -> None:
        """Raise if this object cannot be opened: its journal records are damaged, or a failed
        commit has not been recovered yet."""
        j = self.journal
        why = j._corrupt.get(self.key)
        if why is not None:
            raise CorruptDatabaseError(f"object {self.key} cannot start: {why}. Restore it from a bookmark "
                                       "(duro objects restore) or remove the damaged journal segment")
        failed = j._failed.get(self.key)
        if failed is not None:
            self.recover()

