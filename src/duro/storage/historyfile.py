"""The history file of one object (``<hex>.history``, next to ``<hex>.sqlite``): its format,
bookmarks, and rebuilding the database as of any record. Used by journal.py (the live hooks) and
history.py (restore, branch, prune).

A physical redo log: one record per write commit, ``(seq, epoch ms, tag, db size in pages,
[(pgno, page)], WAL commit frame identity)``. A *base* record holds every page (a snapshot); a
record of size 0 is the empty state (no file). The state at record *i* is the last base at or
before *i* with every later page image applied in order, truncated to the record's size. Bases and
big deltas are zlib-compressed (level 1); small deltas are stored raw, because setting up deflate
costs more than the rest of a small commit.

Format (little-endian): a 32-byte header ``b"DUROHIS1", version u32, page size u32, 16 reserved``,
then records ``[body length u64][crc32(body) u32][body][body length u64]``; body
``seq u64, ms u64, tag u32, db pages u32, flags u32, n u32, commit frame salts+checksum 16 bytes``,
then for a delta ``n x (pgno u32, hole u32)`` and the pages with each page's hole (a run of zeros
in a b-tree page's free space, ``start << 16 | end``) left out; a base has pages 1..n whole.
Pages are zlib-compressed when flags has ZLIB.

Single writer (the process holding the data directory). Never: use threads or asyncio, or let an
OSError escape untranslated.
"""

from __future__ import annotations

import bisect
import mmap
import os
import pathlib
import random
import re
import struct
import zlib
from array import array
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from duro.errors import InvalidInputError, StorageError
from duro.storage.paths import as_path, file_mode, fsync_dir, history_path, make_dirs_durably, marker_path  # noqa: F401 - re-exported

__all__ = ["HistoryFile", "Record", "format_bookmark", "parse_bookmark", "history_path", "marker_path", "as_path",
           "fsync_dir", "page_hole", "PAGE_SIZE", "BASE", "RESTORE", "HEAL", "ZLIB"]

PAGE_SIZE = 4096
MAGIC = b"DUROHIS1"
VERSION = 1
_FILE_HEADER = struct.Struct("<8sII16x")
_PREFIX = struct.Struct("<QI")  # body length, crc32(body)
_SUFFIX = struct.Struct("<Q")  # body length again: lets the last record be found from the end
_BODY = struct.Struct("<QQIIII16s")  # seq, ms, tag, db pages, flags, n, WAL commit frame identity
_TAIL_CACHE_BYTES = 64 * 1024  # the largest last record HistoryFile.open keeps for one read_body
BASE = 1  # every page of the state, pages 1..n, no pgno list
RESTORE = 2  # written by a restore (informational)
HEAL = 4  # a snapshot taken because the history had missed commits (informational)
ZLIB = 8  # the pages are zlib-compressed (bases always; deltas of _COMPRESS_FROM pages or more)
_COMPRESS_FROM = 16  # smaller deltas stay raw: deflate's set-up costs more than a small write
_CHUNK_PAGES = 256

_BOOKMARK = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{12})-([0-9a-f]{8})$")


# ---- bookmarks ------------------------------------------------------------------------------------


def format_bookmark(seq: int, ms: int, tag: int) -> str:
    """Bookmarks are ``{seq:016x}-{ms:012x}-{tag:08x}``: fixed width, so they sort in commit order."""
    return f"{seq:016x}-{ms:012x}-{tag:08x}"


def parse_bookmark(bookmark: Any) -> tuple[int, int, int]:
    """(seq, ms, tag) of a well-formed bookmark, else ``InvalidInputError('Invalid bookmark: ...')``."""
    if not isinstance(bookmark, str):
        raise InvalidInputError(f"Invalid bookmark: expected a string, not {type(bookmark).__name__}")
    m = _BOOKMARK.match(bookmark)
    if m is None:
        shown = bookmark if len(bookmark) <= 80 else bookmark[:77] + "..."
        raise InvalidInputError(f"Invalid bookmark: {shown!r} is not a bookmark; bookmarks look like "
                                "'000000000000002a-018c2b3f4e5a-9f3c0a1b' (from get_current_bookmark() "
                                "or get_bookmark_for_time())")
    return int(m.group(1), 16), int(m.group(2), 16), int(m.group(3), 16)


class Record(NamedTuple):
    """One record's header, as indexed (a tuple: built on every commit, so cheap to make)."""

    index: int
    offset: int
    seq: int
    ms: int
    tag: int
    db_pages: int
    flags: int
    n: int
    ident: bytes = b""  # salts + checksum of the WAL commit frame this record was read from

    @property
    def bookmark(self) -> str:
        return format_bookmark(self.seq, self.ms, self.tag)

    @property
    def is_base(self) -> bool:
        return bool(self.flags & BASE)


# ---- the history file -----------------------------------------------------------------------------


_BTREE_HEADER = {2: 12, 5: 12, 10: 8, 13: 8}  # page type -> header size
# Zeros to compare a page's free space with: a memcmp, where counting the zero bytes stepped
# through them one by one (measured: ~2.3 µs a page, two pages a hot commit).
_ZEROS = memoryview(bytes(PAGE_SIZE))


def page_hole(page: bytes, pgno: int) -> tuple[int, int]:
    """The longest run of zero bytes in a b-tree page's unallocated space (between the cell
    pointer array and the cell content area), as (start, end); (0, 0) if none is worth eliding.
    Only bytes that are zero are elided, so a page is always restored byte for byte; a page that
    is not a b-tree page (overflow, freelist) has a first byte of 0 (a page number < 2**24)."""
    h = 100 if pgno == 1 else 0
    size = _BTREE_HEADER.get(page[h])
    if size is None:
        return 0, 0
    cells, content = struct.unpack_from(">HH", page, h + 3)
    a, b = h + size + 2 * cells, content or 65536
    if not a + 64 <= b <= PAGE_SIZE:
        return 0, 0
    if not page.startswith(_ZEROS[:b - a], a):  # old bytes left by deletes: keep the longest zero end
        gap = page[a:b]
        lead = len(gap) - len(gap.lstrip(b"\0"))
        trail = len(gap) - len(gap.rstrip(b"\0"))
        a, b = (a, a + lead) if lead >= trail else (b - trail, b)
        if b - a < 64:
            return 0, 0
    return a, b


def _os_error(what: str, path: pathlib.Path, e: OSError) -> StorageError:
    return StorageError(f"cannot {what} history file {str(path)!r}: {e.strerror or e}")


class HistoryFile:
    """One ``.history`` file open for reading and appending. Single writer (the process holding
    the data directory). The index of record headers is built on first use and kept up to date."""

    def __init__(self, path: pathlib.Path, fd: int, end: int) -> None:
        self.path = path
        self._fd = fd
        self.end = end
        self._idx: dict[str, array] | None = None
        self._last: Record | None = None
        # (offset, prefix + body) of the last record as ``open`` read and checked it, when small:
        # the next ``read_body`` of that record takes it instead of reading it again (an object's
        # wake compares the last record's pages with its database). Dropped by that read, by any
        # write and by :meth:`drop_read_cache`.
        self._tail_blob: tuple[int, bytes] | None = None

    # -- opening
    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = False) -> "HistoryFile | None":
        """Open ``path``; a torn last record (crash mid-append) is cut off. With ``create`` a
        missing file is created empty (header only); otherwise a missing file gives None."""
        path = as_path(path)  # a Path as it is: opened at every wake, parsing it again is not free
        try:
            if create:
                make_dirs_durably(path.parent)
            fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), file_mode())
        except FileNotFoundError:
            return None
        except OSError as e:
            raise _os_error("open", path, e) from e
        try:
            size = os.fstat(fd).st_size
            if size < _FILE_HEADER.size and (create or os.pread(fd, size, 0) == MAGIC[:size]):
                # New, or its creation was cut short by a crash: (re)write the header.
                os.pwrite(fd, _FILE_HEADER.pack(MAGIC, VERSION, PAGE_SIZE), 0)
                os.ftruncate(fd, _FILE_HEADER.size)
                size = _FILE_HEADER.size
            head = os.pread(fd, _FILE_HEADER.size, 0)
            if len(head) < _FILE_HEADER.size or _FILE_HEADER.unpack(head)[0] != MAGIC:
                raise StorageError(f"{str(path)!r} is not a duro history file (bad header)")
            _, version, page_size = _FILE_HEADER.unpack(head)
            if version != VERSION or page_size != PAGE_SIZE:
                raise StorageError(f"history file {str(path)!r} has version {version}, page size "
                                   f"{page_size}; this duro reads version {VERSION}, page size {PAGE_SIZE}")
        except OSError as e:
            os.close(fd)
            raise _os_error("read", path, e) from e
        except BaseException:
            os.close(fd)
            raise
        hf = cls(path, fd, size)
        if size > _FILE_HEADER.size and hf._read_last(size) is None:
            hf._repair()
        return hf

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def fsync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as e:
            raise _os_error("sync", self.path, e) from e

    # -- reading
    def _read_last(self, end: int) -> Record | None:
        """The record that ends at ``end``, if it is whole and its checksum holds."""
        if end - _FILE_HEADER.size < _PREFIX.size + _BODY.size + _SUFFIX.size:
            return None
        (length,) = _SUFFIX.unpack(os.pread(self._fd, _SUFFIX.size, end - _SUFFIX.size))
        start = end - _SUFFIX.size - length - _PREFIX.size
        if length < _BODY.size or start < _FILE_HEADER.size:
            return None
        blob = os.pread(self._fd, _PREFIX.size + min(length, 1 << 20), start)
        plen, crc = _PREFIX.unpack_from(blob)
        if plen != length:
            return None
        # A big base is written prefix-last, so a torn one fails the length check; small records
        # are checked in full (the common torn tail).
        if length <= 1 << 20 and zlib.crc32(memoryview(blob)[_PREFIX.size:]) != crc:
            return None
        rec = Record(-1, start, *_BODY.unpack_from(blob, _PREFIX.size))
        self._last = rec
        if length <= _TAIL_CACHE_BYTES:
            self._tail_blob = (start, blob)
        return rec

    def _scan(self) -> dict[str, array]:
        """Walk every record header from the start (checksums are checked when read in full)."""
        idx = {k: array("Q") for k in ("off", "seq", "ms")}
        idx.update({k: array("I") for k in ("tag", "pages", "flags", "n")})
        end = self.end
        if end > _FILE_HEADER.size:
            with mmap.mmap(self._fd, end, prot=mmap.PROT_READ) as mm:
                pos = _FILE_HEADER.size
                while pos + _PREFIX.size + _BODY.size + _SUFFIX.size <= end:
                    length, _ = _PREFIX.unpack_from(mm, pos)
                    stop = pos + _PREFIX.size + length + _SUFFIX.size
                    if length < _BODY.size or stop > end or _SUFFIX.unpack_from(mm, stop - _SUFFIX.size)[0] != length:
                        break
                    seq, ms, tag, pages, flags, n, _ = _BODY.unpack_from(mm, pos + _PREFIX.size)
                    if idx["seq"] and seq <= idx["seq"][-1]:
                        break
                    for k, v in (("off", pos), ("seq", seq), ("ms", ms), ("tag", tag), ("pages", pages),
                                 ("flags", flags), ("n", n)):
                        idx[k].append(v)
                    pos = stop
                if pos != end:
                    self.end = pos  # damaged tail: the caller repairs
        return idx

    def _repair(self) -> None:
        self._tail_blob = None
        idx = self._scan()
        try:
            os.ftruncate(self._fd, self.end)
        except OSError as e:
            raise _os_error("repair", self.path, e) from e
        self._idx = idx
        self._last = self.record(len(idx["seq"]) - 1) if idx["seq"] else None

    @property
    def index(self) -> dict[str, array]:
        if self._idx is None:
            self._idx = self._scan()
        return self._idx

    def __bool__(self) -> bool:
        return True

    def __len__(self) -> int:
        return len(self.index["seq"])

    def record(self, i: int) -> Record:
        x = self.index
        if i < 0:
            i += len(x["seq"])
        return Record(i, x["off"][i], x["seq"][i], x["ms"][i], x["tag"][i], x["pages"][i], x["flags"][i], x["n"][i])

    def _record_header(self, offset: int) -> Record:
        (seq, ms, tag, pages, flags, n, ident) = _BODY.unpack(os.pread(self._fd, _BODY.size, offset + _PREFIX.size))
        return Record(-1, offset, seq, ms, tag, pages, flags, n, ident)

    @property
    def last(self) -> Record | None:
        if self._last is None and self.end > _FILE_HEADER.size and len(self):
            self._last = self._record_header(self.index["off"][-1])._replace(index=len(self) - 1)
        return self._last

    @property
    def first(self) -> Record | None:
        return self.record(0) if len(self) else None

    def find_seq(self, seq: int) -> int | None:
        seqs = self.index["seq"]
        i = bisect.bisect_left(seqs, seq)
        return i if i < len(seqs) and seqs[i] == seq else None

    def find_time(self, ms: int) -> int | None:
        """Index of the last record stamped at or before ``ms``."""
        i = bisect.bisect_right(self.index["ms"], ms) - 1
        return i if i >= 0 else None

    def drop_read_cache(self) -> None:
        self._tail_blob = None

    def read_body(self, rec: Record) -> bytes:
        cached = self._tail_blob
        if cached is not None:
            self._tail_blob = None
            if cached[0] == rec.offset:
                return cached[1][_PREFIX.size:]  # whole, and its checksum checked, by _read_last
        try:
            (length, crc) = _PREFIX.unpack(os.pread(self._fd, _PREFIX.size, rec.offset))
            body = os.pread(self._fd, length, rec.offset + _PREFIX.size)
        except OSError as e:
            raise _os_error("read", self.path, e) from e
        if len(body) != length or zlib.crc32(body) != crc:
            raise StorageError(f"history file {str(self.path)!r} is damaged at seq {rec.seq} (checksum mismatch)")
        return body

    def pgnos(self, rec: Record) -> array:
        """The page numbers a delta record holds (read without decompressing)."""
        if rec.is_base:
            return array("I", range(1, rec.n + 1))
        raw = os.pread(self._fd, 8 * rec.n, rec.offset + _PREFIX.size + _BODY.size)
        out = array("I")
        out.frombytes(raw)
        return out[::2]

    def iter_pages(self, rec: Record) -> Iterator[tuple[int, bytes]]:
        """(pgno, page) for every page of ``rec``, decompressing as it goes. A base is read from
        the file in chunks (it can be as big as the database); its checksum is checked at the end."""
        if rec.is_base:
            yield from self._iter_base(rec)
            return
        body = self.read_body(rec)
        ents = array("I")
        ents.frombytes(body[_BODY.size:_BODY.size + 8 * rec.n])
        data = body[_BODY.size + 8 * rec.n:]
        if rec.flags & ZLIB:
            try:
                data = zlib.decompress(data)
            except zlib.error as e:
                raise StorageError(f"history file {str(self.path)!r} is damaged at seq {rec.seq} ({e})") from e
        pos = 0
        for k in range(0, 2 * rec.n, 2):
            a, b = ents[k + 1] >> 16, ents[k + 1] & 0xFFFF
            if a < b:
                stop = pos + PAGE_SIZE - (b - a)
                page = b"".join((data[pos:pos + a], bytes(b - a), data[pos + a:stop]))
            else:
                stop = pos + PAGE_SIZE
                page = data[pos:stop]
            if len(page) != PAGE_SIZE:
                raise StorageError(f"history file {str(self.path)!r} is damaged at seq {rec.seq} (short record)")
            yield ents[k], page
            pos = stop

    def _iter_base(self, rec: Record) -> Iterator[tuple[int, bytes]]:
        damaged = f"history file {str(self.path)!r} is damaged at seq {rec.seq}"
        try:
            length, crc = _PREFIX.unpack(os.pread(self._fd, _PREFIX.size, rec.offset))
            at = rec.offset + _PREFIX.size
            stop = at + length
            running = zlib.crc32(os.pread(self._fd, _BODY.size, at))
            at += _BODY.size
            d = zlib.decompressobj()
            buf, used = b"", 0
            for pgno in range(1, rec.n + 1):
                while len(buf) - used < PAGE_SIZE:
                    if at < stop:
                        chunk = os.pread(self._fd, min(1 << 20, stop - at), at)
                        if not chunk:
                            raise StorageError(damaged + " (short record)")
                        at += len(chunk)
                        running = zlib.crc32(chunk, running)
                        more = d.decompress(chunk)
                    else:
                        more = d.flush()
                        if not more:
                            raise StorageError(damaged + " (short record)")
                    buf, used = buf[used:] + more, 0
                yield pgno, buf[used:used + PAGE_SIZE]
                used += PAGE_SIZE
            while at < stop:  # the rest of the record, for the checksum
                chunk = os.pread(self._fd, min(1 << 20, stop - at), at)
                if not chunk:
                    raise StorageError(damaged + " (short record)")
                at += len(chunk)
                running = zlib.crc32(chunk, running)
        except OSError as e:
            raise _os_error("read", self.path, e) from e
        except zlib.error as e:
            raise StorageError(f"{damaged} ({e})") from e
        if running != crc:
            raise StorageError(damaged + " (checksum mismatch)")

    # -- appending
    def append(self, seq: int, ms: int, db_pages: int, pages: dict[int, bytes] | None = None, *,
               flags: int = 0, tag: int | None = None, source: Callable[[int], bytes] | None = None,
               ident: bytes = b"") -> Record:
        """Append one record. A delta gives ``pages``; a base gives ``flags=BASE`` and either
        ``pages`` (all of them) or ``source(i)`` returning ``_CHUNK_PAGES`` pages starting at page
        ``i`` (1-based). Returns the record."""
        self._tail_blob = None
        last = self.last
        if last is not None and seq <= last.seq:
            raise StorageError(f"history append out of order: seq {seq} after {last.seq}")
        if last is not None and ms < last.ms:
            ms = last.ms  # keep stamps monotonic when the wall clock steps back
        tag = random.getrandbits(32) if tag is None else tag
        start = self.end
        try:
            if flags & BASE:
                n = db_pages
                flags |= ZLIB
                head = _BODY.pack(seq, ms, tag, db_pages, flags, n, b"")
                rec = self._append_base(start, head, n, pages, source)
            else:
                order = sorted(pages or ())
                n = len(order)
                ents = array("I")
                parts: list[bytes] = []
                for p in order:
                    page = pages[p]  # type: ignore[index]
                    a, b = page_hole(page, p)
                    ents.append(p)
                    ents.append(a << 16 | b)
                    parts.append(page[:a] + page[b:] if a < b else page)
                data = b"".join(parts)
                if n >= _COMPRESS_FROM:
                    data = zlib.compress(data, 1)
                    flags |= ZLIB
                head = _BODY.pack(seq, ms, tag, db_pages, flags, n, ident)
                body = b"".join((head, ents.tobytes(), data))
                blob = b"".join((_PREFIX.pack(len(body), zlib.crc32(body)), body, _SUFFIX.pack(len(body))))
                written = os.pwrite(self._fd, blob, start)
                if written != len(blob):
                    raise OSError(28, "short write")
                self.end = start + len(blob)
                rec = Record(-1, start, seq, ms, tag, db_pages, flags, n, ident)
        except OSError as e:
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                pass  # the torn tail is cut off on the next open
            self.end = start
            raise _os_error("append to", self.path, e) from e
        if self._idx is not None:
            x = self._idx
            for k, v in (("off", start), ("seq", seq), ("ms", ms), ("tag", tag), ("pages", db_pages),
                         ("flags", flags), ("n", rec.n)):
                x[k].append(v)
            rec = rec._replace(index=len(x["seq"]) - 1)
        self._last = rec
        return rec

    def _append_base(self, start: int, head: bytes, n: int, pages: dict[int, bytes] | None,
                     source: Callable[[int], bytes] | None) -> Record:
        comp = zlib.compressobj(1)
        pos = start + _PREFIX.size
        os.pwrite(self._fd, head, pos)
        crc = zlib.crc32(head)
        length = len(head)
        pos += len(head)
        for first in range(1, n + 1, _CHUNK_PAGES):
            if source is not None:
                raw = source(first)
            else:
                raw = b"".join(pages[p] for p in range(first, min(n, first + _CHUNK_PAGES - 1) + 1))  # type: ignore[index]
            out = comp.compress(raw)
            if out:
                os.pwrite(self._fd, out, pos)
                crc = zlib.crc32(out, crc)
                length += len(out)
                pos += len(out)
        out = comp.flush()
        os.pwrite(self._fd, out + _SUFFIX.pack(length + len(out)), pos)
        crc = zlib.crc32(out, crc)
        length += len(out)
        os.pwrite(self._fd, _PREFIX.pack(length, crc), start)
        self.end = pos + len(out) + _SUFFIX.size
        seq, ms, tag, db_pages, flags, _, ident = _BODY.unpack(head)
        return Record(-1, start, seq, ms, tag, db_pages, flags, n, ident)

    def append_file_snapshot(self, seq: int, ms: int, db_file: pathlib.Path | None, *, flags: int = 0,
                             tag: int | None = None) -> Record:
        """Append a base record holding every page of ``db_file`` (None or missing: the empty
        state). The file must be quiescent (checkpointed, no writer)."""
        if db_file is None or not db_file.exists():
            return self.append(seq, ms, 0, {}, flags=flags | BASE, tag=tag)
        fd = os.open(db_file, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            n = size // PAGE_SIZE

            def source(first: int) -> bytes:
                count = min(_CHUNK_PAGES, n - first + 1)
                return os.pread(fd, count * PAGE_SIZE, (first - 1) * PAGE_SIZE)

            return self.append(seq, ms, n, flags=flags | BASE, tag=tag, source=source)
        finally:
            os.close(fd)

    def copy_records_from(self, other: "HistoryFile", start_index: int) -> None:
        """Append the raw bytes of ``other``'s records from ``start_index`` on (pruning)."""
        self._tail_blob = None
        if start_index >= len(other):
            return
        off = other.record(start_index).offset
        pos = self.end
        while off < other.end:
            chunk = os.pread(other._fd, min(1 << 22, other.end - off), off)
            os.pwrite(self._fd, chunk, pos)
            off += len(chunk)
            pos += len(chunk)
        self.end = pos
        self._idx = None
        self._last = None
