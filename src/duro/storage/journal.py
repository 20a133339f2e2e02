"""The commit journal of one object: the hooks that keep its history file (historyfile.py) in
step with its database, for point-in-time recovery.

After each write commit, the pages that commit appended to the WAL are read back and appended to
the history as one record. On open, a history that does not hold the database's state (a crash
between a commit and its append, a file changed from outside) is detected and healed with a fresh
snapshot; see :class:`ObjectHistory` for why that is enough.

Never: fsync on the commit path (the history is fsynced before each checkpoint and close instead;
restores and rewrites are fsync'd), use threads or asyncio, or let an OSError escape untranslated.
"""

from __future__ import annotations

import os
import pathlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from duro.clock import now_ms as _wall_ms
from duro.errors import InvalidInputError, StorageError
from duro.storage.durability import History, Run
from duro.storage.historyfile import (  # noqa: F401 - re-exported: tools read the format from here
    BASE, HEAL, MAGIC, PAGE_SIZE, RESTORE, ZLIB, HistoryFile, Record,
    as_path, format_bookmark, fsync_dir, history_path, marker_path, parse_bookmark)
from duro.storage.historyread import materialize_index, read_bookmark_range  # noqa: F401 - re-exported
from duro.storage.journalfile import Capture

__all__ = ["capture_commit", "DetachedHistory", "HistoryOptions", "HistoryFile", "ObjectHistory", "Record", "WalTail", "format_bookmark",
           "parse_bookmark", "history_path", "marker_path", "DAY_MS", "fsync_dir", "materialize_index",
           "wal_last_commit"]

DAY_MS = 86_400_000

# The SQLite WAL format (https://www.sqlite.org/fileformat.html#the_write_ahead_log).
_WAL_HEADER = 32
_FRAME_HEADER = 24
_WAL_MAGIC = (0x377F0682, 0x377F0683)


@dataclass(frozen=True)
class HistoryOptions:
    """History settings of a runtime: records older than ``retention_ms`` are pruned; ``now_ms``
    stamps records (the runtime passes its clock, benchmarks and tests a fake one)."""

    retention_ms: int = 30 * DAY_MS
    now_ms: Callable[[], int] = field(default=_wall_ms, compare=False)

    @classmethod
    def from_days(cls, days: float, now_ms: Callable[[], int] | None = None) -> "HistoryOptions | None":
        """Options for a retention of ``days``; None when ``days`` is 0 (history off)."""
        if days <= 0:
            return None
        return cls(int(days * DAY_MS), now_ms or _wall_ms)


# ---- reading what one commit appended to the WAL -------------------------------------------------


class WalTail:
    """Follows one connection's ``-wal`` file and returns the pages each commit appended.

    Called right after each COMMIT, on the same thread, before anything else can write: the frames
    from our offset up to the first commit frame are that commit's (all with the header's salt). A
    WAL that was restarted (new salt) is read from its first frame.

    It reads through the descriptor SQLite itself holds for the WAL when :meth:`lend` gave a way to
    get it (one descriptor fewer per busy object; never closed here), else through its own."""

    def __init__(self, wal_path: pathlib.Path) -> None:
        self.path = wal_path
        self._fd = -1
        self._own = False  # whether _fd is ours to close (not SQLite's)
        self._borrow: Callable[[], int] | None = None
        self._salt = b""
        self._offset = 0

    def lend(self, borrow: Callable[[], int]) -> None:
        """Read through the descriptor ``borrow()`` returns (SQLite's for this WAL, or -1 when it
        cannot be had), until :meth:`close`. Called when the connection opens."""
        self.close()
        self._borrow = borrow

    def close(self) -> None:
        """Forget the WAL (the connection is closing): SQLite's descriptor is no longer used."""
        if self._fd >= 0 and self._own:
            os.close(self._fd)
        self._fd = -1
        self._borrow = None
        self._salt = b""
        self._offset = 0

    def release(self) -> None:
        """Give our own descriptor back while the object is idle; where the next commit starts is
        kept (the next read opens the file again). SQLite's is kept: it costs nothing more."""
        if self._fd >= 0 and self._own:
            os.close(self._fd)
            self._fd = -1

    @property
    def borrowed(self) -> bool:
        """Whether the last read went through SQLite's own descriptor."""
        return self._fd >= 0 and not self._own

    @property
    def frames(self) -> int:
        """Frames in the WAL up to the end of the last commit read."""
        return max(0, (self._offset - _WAL_HEADER) // (_FRAME_HEADER + PAGE_SIZE))

    def read_commit(self, upto: int = 0) -> tuple[int, dict[int, bytes], bytes] | None:
        """(db size in pages after the commit, {pgno: page image}, the commit frame's identity:
        salts + checksum) of the last commit, or None if it wrote no frame (a write transaction
        that changed no page, e.g. a DELETE that matched nothing). ``upto``: the frame the WAL
        ends at now (SQLite's WAL hook says), when known: the read goes on to the commit frame
        there, taking the frames of any earlier commit it meets on the way too (this reader was
        reset while the WAL held commits it had read: their pages are taken again, later images
        winning, which is still exactly the state after the last commit)."""
        if self._fd < 0:
            fd = self._borrow() if self._borrow is not None else -1
            if fd >= 0:
                self._fd, self._own = fd, False
            else:
                try:
                    self._fd = os.open(self.path, os.O_RDONLY)
                except FileNotFoundError:
                    return None
                self._own = True
        fd = self._fd
        frame = _FRAME_HEADER + PAGE_SIZE
        want = 4  # frames per read: small commits are 1-3 frames; a WAL past a restart holds stale ones
        first: bytes | None = None
        if self._offset <= _WAL_HEADER:
            # The commit's frames start right after the header (the first commit since the open,
            # or since a restart seen): one read for both.
            first = os.pread(fd, _WAL_HEADER + frame * want, 0)
            head, first = first[:_WAL_HEADER], first[_WAL_HEADER:]
        else:
            head = os.pread(fd, _WAL_HEADER, 0)
        if len(head) < _WAL_HEADER:
            return None  # truncated by a checkpoint, and nothing written since
        magic, _, page_size = struct.unpack_from(">III", head)
        if magic not in _WAL_MAGIC or page_size != PAGE_SIZE:
            raise StorageError(f"cannot read the commit from {str(self.path)!r}: not a WAL with {PAGE_SIZE}-byte pages")
        salt = head[16:24]
        if salt != self._salt or self._offset < _WAL_HEADER:
            self._salt = salt
            self._offset = _WAL_HEADER
        pos = self._offset
        pages: dict[int, bytes] = {}
        while True:
            if first is not None:
                chunk, first = first, None  # pos is _WAL_HEADER: read with the header
            else:
                chunk = os.pread(fd, frame * want, pos)
            for at in range(0, len(chunk) - frame + 1, frame):
                if chunk[at + 8:at + 16] != salt:
                    return None  # a frame of an earlier WAL generation: this commit wrote nothing
                pgno, size = struct.unpack_from(">II", chunk, at)
                pages[pgno] = chunk[at + _FRAME_HEADER:at + frame]  # a later image of a page wins
                if size and (not upto or (pos + at - _WAL_HEADER) // frame + 1 >= upto):
                    # One commit per call (we are called after each one): its commit frame ends it.
                    self._offset = pos + at + frame
                    return size, pages, chunk[at + 8:at + 24]
            if len(chunk) < frame * want:
                return None  # only frames a rolled-back transaction spilled: this commit wrote nothing
            pos += len(chunk)
            want = 64


def capture_commit(tail: WalTail, history: History | None, journaled: bool, upto: int = 0) -> Capture | None:
    """After a write commit: read the pages it appended to the WAL (up to frame ``upto``, where
    SQLite says the WAL now ends, when known), once, for the history and the node journal. The
    journal's capture (None without a journal, or when it changed no page)."""
    try:
        got = tail.read_commit(upto)
    except OSError as e:
        raise StorageError(f"the commit succeeded but its pages could not be read from "
                           f"{str(tail.path)!r}: {e.strerror or e}") from e
    rec = history.after_commit(got) if history is not None else None
    if not journaled or got is None:
        return None
    size, pages, ident = got
    if rec is not None:
        return Capture(rec.seq, rec.ms, rec.tag, size, pages, ident)
    return Capture(0, _wall_ms(), 0, size, pages, ident)


def wal_last_commit(wal_path: pathlib.Path) -> bytes | None:
    """The identity (salts + checksum) of the last commit frame in a WAL file that carries the
    header's salts, or None if it has none. Checksums are not verified (that needs the whole
    chain), so a torn frame may be taken for a commit: the caller only uses this to decide that
    a history needs a snapshot, which is safe when wrong."""
    try:
        fd = os.open(wal_path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        head = os.pread(fd, _WAL_HEADER, 0)
        if len(head) < _WAL_HEADER:
            return None
        salt = head[16:24]
        frame = _FRAME_HEADER + PAGE_SIZE
        pos, found = _WAL_HEADER, None
        while True:
            chunk = os.pread(fd, frame * 256, pos)
            for at in range(0, len(chunk) - frame + 1, frame):
                if chunk[at + 8:at + 16] != salt:
                    return found
                if chunk[at + 4:at + 8] != b"\0\0\0\0":
                    found = chunk[at + 8:at + 24]
            if len(chunk) < frame * 256:
                return found
            pos += len(chunk)
    finally:
        os.close(fd)


# ---- the live hooks -------------------------------------------------------------------------------


class _OpenHistory:
    """An open history file: what both a live history and one detached for a worker-thread close
    need — fsync when something is unsynced, record the empty state, close."""

    path: pathlib.Path
    file: "HistoryFile | None"
    options: HistoryOptions
    _unsynced: bool

    def now_ms(self) -> int:
        return int(self.options.now_ms())

    deferred_sync = False
    """Set when the node journal holds every record this history appends and syncs the history
    file itself, later (with the database file): then :meth:`sync` does not fsync."""

    def sync(self) -> None:
        """fsync the history if anything was appended since the last sync."""
        if self._unsynced and self.file is not None and not self.deferred_sync:
            self.file.fsync()
        self._unsynced = False

    def _record_empty(self, hf: "HistoryFile | None") -> None:
        """The database's files were removed because it holds nothing: a base of the empty state
        (unless the history already ends in one)."""
        if hf is not None and hf.last is not None and hf.last.db_pages:
            hf.append(hf.last.seq + 1, self.now_ms(), 0, {}, flags=BASE)
            self._unsynced = True

    def close(self) -> None:
        """Sync, then close the file."""
        try:
            self.sync()
        finally:
            if self.file is not None:
                self.file.close()
                self.file = None


class ObjectHistory(_OpenHistory):
    """The history of one object's database (the :class:`~duro.storage.durability.History`
    contract, in a ``.history`` file), driven by :class:`~duro.storage.ObjectDatabase`:

    - ``attach(run, checkpoint, existed)`` after the connection opens: decide whether the history
      holds the database's current state (below), heal it with a snapshot if not, checkpoint;
    - ``prepare_commit()`` inside a write transaction before COMMIT: number the commit;
    - ``after_commit(got)`` after COMMIT: append the pages the commit wrote (the connection read
      them from the WAL once, for the history and the node journal alike); every ~1,000 WAL pages
      the database fsyncs the history (``sync``/``sync_later``), then checkpoints;
    - ``after_discard()`` when the files of an emptied database are removed: record the empty state;
    - ``close()`` before the connection closes (and checkpoints): fsync the history.

    Why the history always holds the database's state, or notices that it does not. The history
    is not fsynced per commit. It is fsynced before every checkpoint and before the connection
    closes, so a commit can only reach the database file once its record is durable. A commit
    that is only in the WAL at open (a crash before its record was appended or synced) shows up as
    a WAL commit frame that is not the history's last record. A last record that the database
    does not hold (its WAL frames were lost) shows up as a page that differs. A database changed
    or replaced from outside shows up as a nonzero ``user_version`` (tools set it) or another page
    count. Any of these: the database as SQLite recovers it is appended as a new base (HEAL).
    """

    def __init__(self, db_path: str | os.PathLike[str], options: HistoryOptions) -> None:
        self.db_path = db = as_path(db_path)
        self.path = history_path(db)
        self.options = options
        self.file: HistoryFile | None = None
        self.wal_path = db.with_name(db.name + "-wal")
        self._seq = 0  # seq of the commit being prepared
        self._unsynced = False
        self._checkpoint: Callable[..., None] | None = None
        self.restore_checked = False

    # -- the file
    def _open_file(self, create: bool) -> HistoryFile | None:
        if self.file is None:
            self.file = HistoryFile.open(self.path, create=create)
        return self.file

    def _start_empty(self) -> HistoryFile:
        """A history that starts from the empty database at seq 0."""
        hf = self._open_file(True)
        assert hf is not None
        if hf.last is None:
            hf.append(0, self.now_ms(), 0, {}, flags=BASE)
        return hf

    # -- hooks
    def attach(self, run: Run, checkpoint: Callable[..., None], existed: bool) -> None:
        self._checkpoint = checkpoint
        hf = self._open_file(False)
        if not existed:
            # A brand-new file: the state is empty. A history that says otherwise (its database
            # was removed from outside, or a power loss kept the unlink but not the record) gets
            # an empty record; a missing history is created at the first commit.
            if hf is not None:
                hf.drop_read_cache()
                if hf.last is not None and hf.last.db_pages:
                    hf.append(hf.last.seq + 1, self.now_ms(), 0, {}, flags=BASE | HEAL)
                    self._unsynced = True
            return
        try:
            wal_empty = os.stat(self.wal_path).st_size == 0  # as a clean close leaves it
        except FileNotFoundError:
            wal_empty = True
        in_wal = None
        if not wal_empty:
            in_wal = wal_last_commit(self.wal_path)
            checkpoint()  # the WAL is now empty: every frame we read later is a new commit's
        if hf is None:
            hf = self._open_file(True)
            assert hf is not None
        last = hf.last
        marked = run("PRAGMA user_version")[0][0]
        try:
            # _holds reads the last record's pages: HistoryFile.open has just read and checked
            # that record (a small one is read from memory; the cache is dropped here either way).
            holds = (last is not None and last.db_pages and not marked
                     and (in_wal is None or in_wal == last.ident)
                     and run("PRAGMA page_count")[0][0] == last.db_pages
                     and (last.is_base or self._holds(hf, last)))
        finally:
            hf.drop_read_cache()
        if holds:
            return
        # The history missed commits, or never had this database: snapshot it as a new base.
        if marked:
            run("BEGIN IMMEDIATE")
            try:
                run("PRAGMA user_version = 0")
            except BaseException:
                run("ROLLBACK")
                raise
            run("COMMIT")
            checkpoint()
        seq = 0 if last is None else last.seq + 1
        hf.append_file_snapshot(seq, self.now_ms(), self.db_path, flags=0 if last is None else HEAL)
        hf.fsync()

    def _holds(self, hf: HistoryFile, rec: Record) -> bool:
        """Whether the (checkpointed) database has every page image of delta ``rec``."""
        fd = os.open(self.db_path, os.O_RDONLY)
        try:
            for pgno, page in hf.iter_pages(rec):
                if pgno <= rec.db_pages and os.pread(fd, PAGE_SIZE, (pgno - 1) * PAGE_SIZE) != page:
                    return False
            return True
        finally:
            os.close(fd)

    def prepare_commit(self) -> None:
        hf = self.file or self._open_file(False) or self._start_empty()
        last = hf.last
        self._seq = (last.seq if last is not None else 0) + 1

    def after_commit(self, got: tuple[int, dict[int, bytes], bytes] | None) -> Record | None:
        hf = self.file
        assert hf is not None
        if got is None:
            return None  # nothing changed: no new point in history
        size, pages, ident = got
        rec = hf.append(self._seq, self.now_ms(), size, pages, ident=ident)
        self._unsynced = True
        return rec
        # The database checkpoints every ~1,000 WAL pages, calling sync() or sync_later() first.

    def sync_later(self) -> Callable[[], None]:
        """For a checkpoint on another thread: a function that fsyncs the history as it is now.
        The database waits for that checkpoint before it closes, so the file stays open."""
        hf = self.file
        self._unsynced = False
        return hf.fsync if hf is not None else (lambda: None)

    def release(self) -> None:
        """Give the history file's descriptor back while the object is idle (the next commit
        opens it again). Only once nothing appended waits for a sync this history would do."""
        if self.file is not None and (self.deferred_sync or not self._unsynced):
            self.file.close()
            self.file = None

    def detach(self) -> "DetachedHistory":
        """Hand the open history to the thread that finishes the database's close (``close(offload=
        True)``); this object is left closed, ready to attach again."""
        detached = DetachedHistory(self.path, self.file, self._unsynced, self.options)
        detached.deferred_sync = self.deferred_sync
        self.file = None
        self._unsynced = False
        self._checkpoint = None
        return detached

    def after_discard(self) -> None:
        """The database's files were removed because it holds nothing: record the empty state."""
        self._record_empty(self._open_file(False))
        self.close()  # before the connection closes (which checkpoints): the history is synced first

    # -- queries (the database must be attached, or have no file)
    def current(self) -> Record:
        hf = self.file or self._open_file(False) or self._start_empty()
        last = hf.last
        assert last is not None
        return last

    def resolve(self, bookmark: str) -> Record:
        """The record ``bookmark`` names in this history, else InvalidInputError."""
        seq, ms, tag = parse_bookmark(bookmark)
        hf = self.file or self._open_file(False)
        i = hf.find_seq(seq) if hf is not None else None
        rec = hf.record(i) if i is not None and hf is not None else None
        if rec is None or rec.ms != ms or rec.tag != tag:
            first = hf.first if hf is not None else None
            if first is not None and seq < first.seq:
                raise InvalidInputError(f"Invalid bookmark: {bookmark!r} is older than this object's history, "
                                        f"which starts at {first.bookmark} (history is kept for "
                                        f"{self.options.retention_ms / DAY_MS:g} days)")
            raise InvalidInputError(f"Invalid bookmark: {bookmark!r} does not name a point in this object's history")
        return rec

    def for_time(self, when_ms: int) -> Record:
        now = self.now_ms()
        window = self.options.retention_ms
        if when_ms > now:
            raise InvalidInputError(f"time {when_ms} (epoch ms) is in the future (now is {now})")
        if when_ms < now - window:
            raise InvalidInputError(f"time {when_ms} (epoch ms) is outside the retention window: history is "
                                    f"kept for {window / DAY_MS:g} days, back to {now - window}")
        hf = self.file or self._open_file(False) or self._start_empty()
        i = hf.find_time(when_ms)
        if i is None:
            first = hf.first
            assert first is not None
            if first.seq == 0 and first.db_pages == 0:
                return first  # the object did not exist yet: its state was empty
            raise InvalidInputError(f"time {when_ms} (epoch ms) is before this object's history, which starts "
                                    f"at {first.ms}")
        return hf.record(i)


class DetachedHistory(_OpenHistory):
    """An object's history after its database's connection was handed to a worker thread to close
    (the :class:`~duro.storage.durability.ClosingHistory` contract):
    ``sync()`` before SQLite's checkpoint, ``discarded()`` once an empty database's files are
    removed (as :meth:`ObjectHistory.after_discard`), then ``close()`` (which syncs)."""

    def __init__(self, path: pathlib.Path, file: HistoryFile | None, unsynced: bool,
                 options: HistoryOptions) -> None:
        self.path = path
        self.file = file
        self.options = options
        self._unsynced = unsynced

    def discarded(self) -> None:
        if self.file is None:
            self.file = HistoryFile.open(self.path)
        self._record_empty(self.file)
