"""The node journal on disk: its record format, reading segments back, and redo.

The node journal (DESIGN.md §3) is the durability source of every object on a node: a commit is
durable once its record is in a journal segment and that segment is fdatasync'd. Object database
files are a materialisation the journal can redo. This module is the synchronous half: encoding
records, scanning segments (checksums, torn tail, corruption in the middle) and applying an
object's records to its files. The thread and the futures are :mod:`duro.runtime.nodejournal`'s.

Format (little-endian). A segment is ``DATA/journal/<first lsn, 16 hex digits>.journal``; it is a
plain sequence of records, each::

    head   magic u32, kind u8, flags u8, key length u16, body length u32, lsn u64, prev u64,
           body crc32 u32
    hcrc   crc32(head + key) u32
    key    the object's database path relative to the data directory (utf-8)
    body   COMMIT: seq u64, ms u64, tag u32, db pages u32, n u32, WAL commit frame identity 16 bytes,
           then n x (pgno u32, hole start u16, hole end u16), then the n pages with their hole (a run
           of zeros in a b-tree page's free space) left out
           SYNCED: through-lsn u64 (the object's file holds every record of it up to that lsn,
           durably: older records of the key are no longer needed)
           CLEAN: empty, no key (a clean shutdown: every object file was synced)
           EPOCH: the cluster journal only (:mod:`duro.cluster.journal`): a new owner took the
           object over; lsn is its fencing token, the body names the node (utf-8)

``lsn`` numbers records node-wide (1, 2, ...); ``prev`` is the lsn of the same key's previous
COMMIT record (0 for none), so a record lost in the middle shows up as a break in the chain.

Never: use asyncio, keep state between calls, or let an OSError escape untranslated.
"""

from __future__ import annotations

import logging
import os
import pathlib
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from duro.errors import StorageError
from duro.storage.historyfile import BASE, HEAL, PAGE_SIZE, HistoryFile, Record, page_hole
from duro.storage.paths import file_mode, fsync_dir, history_path, make_dirs_durably

__all__ = ["COMMIT", "SYNCED", "CLEAN", "EPOCH", "Capture", "JournalRecord", "Scan", "encode_commit",
           "encode_marker", "encode_record", "decode_records", "scan_segments", "segment_name", "segment_paths", "redo",
           "record_capture", "SEGMENT_SUFFIX"]

_log = logging.getLogger("duro.journal")

MAGIC = 0x4C4A5244  # b"DRJL"
COMMIT, SYNCED, CLEAN, EPOCH = 1, 2, 3, 4
SEGMENT_SUFFIX = ".journal"
_HEAD = struct.Struct("<IBBHIQQI")
_HCRC = struct.Struct("<I")
_COMMIT = struct.Struct("<QQIII16s")
_PAGE = struct.Struct("<IHH")
_LSN = struct.Struct("<Q")
_PRE = _HEAD.size + _HCRC.size
SIDE_FILES = ("-wal", "-shm", "-journal")


@dataclass(frozen=True)
class Capture:
    """One write commit as the object's connection saw it: what its journal record carries."""

    seq: int
    ms: int
    tag: int
    db_pages: int
    pages: dict[int, bytes]
    ident: bytes


def _record(kind: int, lsn: int, prev: int, key: bytes, body: bytes) -> bytes:
    head = _HEAD.pack(MAGIC, kind, 0, len(key), len(body), lsn, prev, zlib.crc32(body))
    return b"".join((head, _HCRC.pack(zlib.crc32(key, zlib.crc32(head))), key, body))


def encode_record(kind: int, lsn: int, prev: int, key: bytes, body: bytes) -> bytes:
    """One record of any kind, checksummed (the format above)."""
    return _record(kind, lsn, prev, key, body)


def encode_commit(lsn: int, prev: int, key: bytes, c: Capture) -> bytes:
    """The COMMIT record of ``c``, with the holes of its b-tree pages left out."""
    order = sorted(c.pages)
    ents: list[bytes] = []
    parts: list[bytes] = []
    for p in order:
        page = c.pages[p]
        a, b = page_hole(page, p)
        ents.append(_PAGE.pack(p, a, b if a < b else 0))
        parts.append(page[:a] + page[b:] if a < b else page)
    body = b"".join((_COMMIT.pack(c.seq, c.ms, c.tag, c.db_pages, len(order), c.ident), *ents, *parts))
    return _record(COMMIT, lsn, prev, key, body)


def encode_marker(kind: int, lsn: int, key: bytes = b"", through: int = 0) -> bytes:
    """A SYNCED marker (``key``'s file holds every record up to ``through``) or CLEAN."""
    return _record(kind, lsn, 0, key, _LSN.pack(through) if kind == SYNCED else b"")


@dataclass
class JournalRecord:
    """One record read back. ``body`` is decoded on demand (:meth:`capture`)."""

    kind: int
    lsn: int
    prev: int
    key: str
    body: bytes
    where: str  # "segment file:offset", for messages

    @property
    def through(self) -> int:
        return _LSN.unpack_from(self.body)[0] if self.kind == SYNCED else 0

    def capture(self) -> Capture:
        seq, ms, tag, db_pages, n, ident = _COMMIT.unpack_from(self.body)
        at = _COMMIT.size
        ents = [_PAGE.unpack_from(self.body, at + i * _PAGE.size) for i in range(n)]
        at += n * _PAGE.size
        pages: dict[int, bytes] = {}
        body = self.body
        for pgno, a, b in ents:
            kept = PAGE_SIZE - (b - a) if b else PAGE_SIZE
            data = body[at:at + kept]
            at += kept
            pages[pgno] = data[:a] + bytes(b - a) + data[a:] if b else data
            if len(pages[pgno]) != PAGE_SIZE:
                raise StorageError(f"journal record at {self.where} is malformed: page {pgno} is "
                                   f"{len(pages[pgno])} bytes")
        return Capture(seq, ms, tag, db_pages, pages, ident)


def decode_records(buf: bytes, where: str) -> list[JournalRecord]:
    """Every record of ``buf``, which must hold whole records only (one message of the cluster
    journal); StorageError naming ``where`` if any of them fails its checks."""
    out: list[JournalRecord] = []
    at = 0
    while at < len(buf):
        head = _valid_head(buf, at)
        if head is None:
            raise StorageError(f"journal record at {where}:{at} is damaged (its header fails its checksum)")
        kind, klen, blen, lsn, prev, key, bcrc = head
        end = at + _PRE + klen + blen
        body = buf[at + _PRE + klen:end]
        if end > len(buf) or zlib.crc32(body) != bcrc:
            raise StorageError(f"journal record {lsn} at {where}:{at} fails its checksum")
        out.append(JournalRecord(kind, lsn, prev, key, body, f"{where}:{at}"))
        at = end
    return out


def segment_name(first_lsn: int) -> str:
    return f"{first_lsn:016x}{SEGMENT_SUFFIX}"


def segment_paths(folder: pathlib.Path) -> list[pathlib.Path]:
    """The segments in ``folder``, oldest first."""
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(SEGMENT_SUFFIX))
    except FileNotFoundError:
        return []
    return [folder / n for n in names]


@dataclass
class Scan:
    """What the segments hold, read back in order."""

    records: list[JournalRecord] = field(default_factory=list)
    last_lsn: int = 0
    clean: bool = False  # the last record is CLEAN: nothing to redo, no stray WAL to remove
    torn_at: tuple[pathlib.Path, int] | None = None  # where the torn tail of the last segment starts
    corrupt: dict[str, str] = field(default_factory=dict)  # key -> why it cannot be recovered
    damage: list[str] = field(default_factory=list)  # damaged spans no key could be named for


def _valid_head(buf: bytes, at: int) -> tuple[int, int, int, int, int, str, int] | None:
    """(kind, key length, body length, lsn, prev, key, body crc) of a record whose header checks
    out at ``at``, else None."""
    if at + _PRE > len(buf):
        return None
    magic, kind, _, klen, blen, lsn, prev, bcrc = _HEAD.unpack_from(buf, at)
    if magic != MAGIC or at + _PRE + klen > len(buf):
        return None
    (hcrc,) = _HCRC.unpack_from(buf, at + _HEAD.size)
    key = buf[at + _PRE:at + _PRE + klen]
    if zlib.crc32(key, zlib.crc32(buf[at:at + _HEAD.size])) != hcrc:
        return None
    try:
        name = key.decode()
    except UnicodeDecodeError:
        return None
    return kind, klen, blen, lsn, prev, name, bcrc


def _next_head(buf: bytes, start: int) -> int:
    """The offset of the next record header that checks out after ``start``, or -1."""
    needle = struct.pack("<I", MAGIC)
    at = buf.find(needle, start + 1)
    while at >= 0:
        if _valid_head(buf, at) is not None:
            return at
        at = buf.find(needle, at + 1)
    return -1


def scan_segments(paths: list[pathlib.Path]) -> Scan:
    """Read every record of ``paths`` (oldest first), checking each one. A record cut short at the
    end of the last segment was never acknowledged (its fdatasync had not returned): it is left out
    and ``torn_at`` says where it starts. A record that fails its checksum anywhere else is damage:
    the key it belongs to (when its header still names one) is listed in ``corrupt``."""
    scan = Scan()
    for si, path in enumerate(paths):
        last_segment = si == len(paths) - 1
        try:
            buf = path.read_bytes()
        except OSError as e:
            raise StorageError(f"cannot read journal segment {str(path)!r}: {e.strerror or e}") from e
        at = 0
        while at < len(buf):
            head = _valid_head(buf, at)
            end = -1
            if head is not None:
                kind, klen, blen, lsn, prev, key, bcrc = head
                end = at + _PRE + klen + blen
            if head is not None and end <= len(buf):
                body = buf[at + _PRE + klen:end]
                where = f"{path.name}:{at}"
                if zlib.crc32(body) == bcrc:
                    scan.records.append(JournalRecord(kind, lsn, prev, key, body, where))
                    scan.last_lsn = max(scan.last_lsn, lsn)
                    at = end
                    continue
                if not (last_segment and _next_head(buf, at) < 0):
                    scan.corrupt.setdefault(key, f"journal record {lsn} at {where} fails its checksum")
                    at = end
                    continue
            # A record that does not check out: the torn tail, unless whole records follow it.
            nxt = _next_head(buf, at)
            if nxt < 0 and last_segment:
                scan.torn_at = (path, at)
                break
            scan.damage.append(f"{path.name}: bytes {at}..{nxt if nxt >= 0 else len(buf)} are not a record")
            if nxt < 0:
                break
            at = nxt
    scan.clean = bool(scan.records) and scan.records[-1].kind == CLEAN and scan.torn_at is None
    return scan


def pending_redo(scan: Scan) -> tuple[dict[str, list[JournalRecord]], dict[str, str]]:
    """Per key, the COMMIT records newer than its last SYNCED marker, in order; and the keys whose
    records are damaged or broken in their chain (with why)."""
    todo: dict[str, list[JournalRecord]] = {}
    synced: dict[str, int] = {}
    for r in scan.records:
        if r.kind == SYNCED:
            synced[r.key] = max(synced.get(r.key, 0), r.through)
    for r in scan.records:
        if r.kind == COMMIT and r.lsn > synced.get(r.key, 0):
            todo.setdefault(r.key, []).append(r)
    corrupt = dict(scan.corrupt)
    for key, recs in todo.items():
        if key in corrupt:
            continue
        base = synced.get(key, 0)
        seen = {r.lsn for r in recs}
        for r in recs:
            if r.prev > base and r.prev not in seen:
                corrupt[key] = (f"journal record {r.prev} of this object is missing (record {r.lsn} at "
                                f"{r.where} follows it)")
                break
    return todo, corrupt


def redo(data_dir: pathlib.Path, key: str, records: list[JournalRecord], *, history: bool) -> None:
    """Make ``key``'s database file hold the state of its last record, durably: its side files
    (which may hold commits the journal never acknowledged, stale frames or a stale rollback
    journal: :func:`stray_side_files`) are removed,
    every page image is written in order and the file is cut to the last record's size, then
    fdatasync'd. Idempotent. With ``history`` the object's history gets the records it lacks."""
    db = data_dir / key
    for side in SIDE_FILES:
        pathlib.Path(str(db) + side).unlink(missing_ok=True)
    if not records:
        return
    captures = [r.capture() for r in records]
    try:
        make_dirs_durably(db.parent)
        created = not db.exists()
        fd = os.open(db, os.O_RDWR | os.O_CREAT, file_mode())
        try:
            for c in captures:
                for pgno, page in c.pages.items():
                    os.pwrite(fd, page, (pgno - 1) * PAGE_SIZE)
            os.ftruncate(fd, captures[-1].db_pages * PAGE_SIZE)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(db.parent)
    except OSError as e:
        raise StorageError(f"cannot redo the journal into {str(db)!r}: {e.strerror or e}") from e
    if history and captures[-1].seq:
        try:
            _redo_history(db, captures)
        except StorageError as e:
            # The database is whole; its history heals itself with a snapshot when it opens.
            _log.warning("the history of %s could not be redone: %s", db, e)


def _redo_history(db: pathlib.Path, captures: list[Capture]) -> None:
    """Append to the history the records it lacks (a power cut took its unsynced tail). If it lacks
    more than the journal holds, the state as redone is appended as a base instead (HEAL)."""
    hpath = history_path(db)
    created = not hpath.exists()
    hf = HistoryFile.open(hpath, create=True)
    assert hf is not None
    try:
        last = hf.last
        missing = [c for c in captures if last is None or c.seq > last.seq]
        if missing:
            expected = 0 if last is None else last.seq
            if last is None and missing[0].seq == 1:
                hf.append(0, missing[0].ms, 0, {}, flags=BASE)
            elif missing[0].seq != expected + 1:
                # The state as redone is the state at the last record: the base takes its number,
                # so the next commit's number is the one its journal record will carry (in cluster
                # mode every owner numbers an object's commits alike: bookmarks are the cluster's).
                missing = []
                hf.append_file_snapshot(captures[-1].seq, captures[-1].ms, db, flags=HEAL)
            for c in missing:
                hf.append(c.seq, c.ms, c.db_pages, c.pages, tag=c.tag, ident=c.ident)
            hf.fsync()
    finally:
        hf.close()
    if created:
        try:
            fsync_dir(hpath.parent)
        except OSError as e:
            raise StorageError(f"cannot sync the folder of {str(hpath)!r}: {e.strerror or e}") from e


def record_capture(hf: HistoryFile, rec: Record) -> Capture:
    """History record ``rec`` as a journal commit: every page it holds (a base: the whole file)
    and the size after it. For a change made outside the object's connection (a restore, an
    import, an admin write) that a journal must carry as the object's next commit."""
    return Capture(rec.seq, rec.ms, rec.tag, rec.db_pages, dict(hf.iter_pages(rec)) if rec.db_pages else {},
                   rec.ident or bytes(16))


def stray_side_files(data_dir: pathlib.Path) -> Iterator[pathlib.Path]:
    """Every object's ``-wal``, ``-shm`` and ``-journal`` file (``DATA/do/<namespace>/``): after an
    unclean stop they may hold commits that were never acknowledged, frames already checkpointed,
    or the pre-images of a database's creation (SQLite switches a new file to WAL mode in a
    rollback-journal transaction, and the removal of that ``-journal`` is not synced: a power cut
    can bring it back, and SQLite would then "roll back" a redone file to an older state)."""
    root = data_dir / "do"
    try:
        spaces = list(os.scandir(root))
    except FileNotFoundError:
        return
    for ns in spaces:
        if not ns.is_dir(follow_symlinks=False):
            continue
        with os.scandir(ns.path) as it:
            for entry in it:
                if entry.name.endswith(SIDE_FILES):
                    yield pathlib.Path(entry.path)
