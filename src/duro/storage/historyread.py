"""Reading states back out of a history file (``historyfile.py``): materialising the database as of
one record, and the bookmark range a history holds (read without opening it for writing)."""

from __future__ import annotations

import os
import pathlib

from duro.errors import StorageError
from duro.storage.historyfile import (  # the format's layout: one file format, two modules
    _BODY, _CHUNK_PAGES, _FILE_HEADER, _PREFIX, _SUFFIX, MAGIC, PAGE_SIZE, HistoryFile, format_bookmark,
)
from duro.storage.paths import file_mode

__all__ = ["materialize_index", "read_bookmark_range"]


# ---- materialising a state ------------------------------------------------------------------------


def materialize_index(hf: HistoryFile, i: int, out: pathlib.Path) -> int:
    """Write the database as of record ``i`` to ``out`` (created or replaced in place, not
    synced). Returns its size in pages; 0 means the empty state (``out`` is left empty).

    Walks back from ``i`` to the last base and takes each page from the newest record that holds
    it, so restoring one hour back reads only that hour's page lists plus one base."""
    target = hf.record(i)
    size = target.db_pages
    b = i
    while not hf.record(b).is_base:
        b -= 1
        if b < 0:
            raise StorageError(f"history file {str(hf.path)!r} has no base before seq {target.seq}")
    owner: dict[int, int] = {}
    for j in range(i, b, -1):
        for p in hf.pgnos(hf.record(j)):
            if p <= size and p not in owner:
                owner[p] = j
    by_record: dict[int, set[int]] = {}
    for p, j in owner.items():
        by_record.setdefault(j, set()).add(p)
    base = hf.record(b)
    fd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_TRUNC, file_mode())
    try:
        if size and base.n:
            batch: list[bytes] = []
            first = 1
            for pgno, page in hf.iter_pages(base):
                if pgno > size:
                    break
                batch.append(page)
                if len(batch) == _CHUNK_PAGES:
                    os.pwrite(fd, b"".join(batch), (first - 1) * PAGE_SIZE)
                    first += len(batch)
                    batch = []
            if batch:
                os.pwrite(fd, b"".join(batch), (first - 1) * PAGE_SIZE)
        for j, wanted in by_record.items():
            for pgno, page in hf.iter_pages(hf.record(j)):
                if pgno in wanted:
                    os.pwrite(fd, page, (pgno - 1) * PAGE_SIZE)
        missing = size - min(size, base.n)
        if missing:
            covered = sum(1 for p in owner if p > base.n)
            if covered != missing:
                raise StorageError(f"history file {str(hf.path)!r} is incomplete: seq {target.seq} needs "
                                   f"pages up to {size}, {missing - covered} of them are in no record")
        os.ftruncate(fd, size * PAGE_SIZE)
    finally:
        os.close(fd)
    return size


def read_bookmark_range(hpath: pathlib.Path) -> tuple[str, str] | None:
    """(first, last) bookmark of the history file at ``hpath``, read without opening it as a
    HistoryFile (no lock, no index, nothing changed); None when there is no such file or it holds no
    record. A last record that is being appended right now (a torn tail) is skipped."""
    try:
        f = open(hpath, "rb")
    except FileNotFoundError:
        return None
    with f:
        header, prefix, suffix, body = _FILE_HEADER, _PREFIX, _SUFFIX, _BODY
        head = f.read(header.size)
        if len(head) < header.size or header.unpack(head)[0] != MAGIC:
            raise StorageError(f"{hpath} is not a duro history file")
        end = f.seek(0, os.SEEK_END)

        def bookmark_at(start: int) -> str | None:
            f.seek(start)
            blob = f.read(prefix.size + body.size)
            if len(blob) < prefix.size + body.size:
                return None
            seq, ms, tag = body.unpack_from(blob, prefix.size)[:3]
            return format_bookmark(seq, ms, tag)

        first = bookmark_at(header.size)
        if first is None:
            return None
        last = None
        pos = end
        while pos > header.size and last is None:  # skip a torn tail
            f.seek(pos - suffix.size)
            (length,) = suffix.unpack(f.read(suffix.size))
            start = pos - suffix.size - length - prefix.size
            if start < header.size:
                break
            f.seek(start)
            if prefix.unpack(f.read(prefix.size))[0] != length:
                break
            last = bookmark_at(start)
        return first, (last or first)
