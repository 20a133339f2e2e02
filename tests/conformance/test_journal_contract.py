"""The file-specific rest of the commit journal's contract, run against every journal on local
files in ``conftest.JOURNALS``: a record is acknowledged only once its segment is fdatasync'd, many
objects' commits share one flush, records covered by a durable SYNCED marker are dropped with their
segments while others are kept, a torn tail is cut and the object redone from its whole records, a
failed write fails its commits without breaking the chain, a clean close needs no redo, and an
unwritable journal directory is a clear error. What every implementation keeps, the JetStream
journal included, is ``test_journal_shared_contract.py``."""

from __future__ import annotations

import asyncio
import errno
import os
import random

import pytest

from duro.errors import StorageError
from duro.storage.durability import Barrier
from duro.storage.journalfile import Capture

from .conftest import JournalCase
from .disk import DiskLog, real

TIMEOUT = 10.0


def page(fill: int) -> bytes:
    """A b-tree leaf page with a hole in its free space (exercises the hole encoding)."""
    b = bytearray(4096)
    b[0] = 13
    b[5:7] = (4000).to_bytes(2, "big")
    b[4000:] = bytes([fill]) * 96
    return bytes(b)


def commit(seq: int, fill: int = 1, pages: int = 1, dense: bool = False) -> Capture:
    """A commit of ``pages`` pages (``dense``: 4 KB of noise each, nothing to leave out)."""
    make = (lambda f: random.Random(f).randbytes(4096)) if dense else page
    return Capture(seq, 1_700_000_000_000 + seq, seq * 7, pages + 1,
                   {p: make(fill + p) for p in range(2, 2 + pages)}, seq.to_bytes(16, "little"))


async def started(case: JournalCase):
    j = case.make()
    j.open()
    j.start()
    return j


async def test_it_is_a_barrier_too(journal_case: JournalCase) -> None:
    j = await started(journal_case)
    try:
        assert isinstance(j, Barrier) and j.mode == "fsync"
    finally:
        await j.close()


async def test_an_append_is_acknowledged_only_once_its_segment_is_synced(journal_case, disk: DiskLog) -> None:
    j = await started(journal_case)
    try:
        disk.block()
        fut = j.append("do/ns/a.sqlite", commit(1))
        await disk.wait_blocked()
        await asyncio.sleep(0.05)
        assert not fut.done(), "acknowledged before its fdatasync returned"
        disk.unblock()
        await asyncio.wait_for(fut, TIMEOUT)
        assert real(journal_case.segments()[-1]) in disk.datasynced
    finally:
        disk.unblock()
        await j.close()


async def test_many_objects_commits_share_one_flush(journal_case: JournalCase) -> None:
    j = await started(journal_case)
    try:
        futs = [j.append(f"do/ns/o{i}.sqlite", commit(1, i)) for i in range(200)]
        await asyncio.wait_for(asyncio.gather(*futs), TIMEOUT)
        assert j.statistics()["flushes"] <= 2, j.statistics()
    finally:
        await j.close()


async def test_synced_records_are_dropped_and_the_others_kept(journal_case: JournalCase) -> None:
    j = await started(journal_case)
    try:
        keep = await asyncio.wait_for(j.append("do/ns/keep.sqlite", commit(1, 5)), TIMEOUT)
        assert keep is None
        for s in range(1, 60):  # ~60 x 4 KB pages: several 64 KB segments
            await asyncio.wait_for(j.append("do/ns/hot.sqlite", commit(s, s, dense=True)), TIMEOUT)
        assert len(journal_case.segments()) > 2
        j.link(journal_case.data_dir / "do/ns/hot.sqlite").synced(j._last["do/ns/hot.sqlite"], durable=True)
        j.link(journal_case.data_dir / "do/ns/other.sqlite").synced(0, durable=True)
        await asyncio.wait_for(j.append("do/ns/x.sqlite", commit(1)), TIMEOUT)  # one more flush
        # "keep" was never synced: its segment stays, and so do its records.
        assert [c.seq for _, c in j.read("do/ns/keep.sqlite")] == [1]
        assert len(journal_case.segments()) <= 2
        j.link(journal_case.data_dir / "do/ns/keep.sqlite").synced(j._last["do/ns/keep.sqlite"], durable=True)
        for s in range(60, 80):
            await asyncio.wait_for(j.append("do/ns/hot2.sqlite", commit(s, s, dense=True)), TIMEOUT)
        assert j.read("do/ns/keep.sqlite") == []
    finally:
        await j.close()


async def test_a_torn_tail_was_never_acknowledged_and_is_discarded(journal_case: JournalCase) -> None:
    j = await started(journal_case)
    try:
        for s in (1, 2, 3):
            await asyncio.wait_for(j.append("do/ns/a.sqlite", commit(s, s)), TIMEOUT)
    finally:
        j._closing = True  # a crash: no CLEAN marker, the thread simply stops
        with j._cond:
            j._cond.notify_all()
        j._thread.join()
    seg = journal_case.segments()[-1]
    size = seg.stat().st_size
    with open(seg, "r+b") as f:
        f.truncate(size - 100)  # the power went out in the middle of the last record's write
    j = journal_case.make()
    report = j.open()
    assert not report.clean and not report.corrupt
    # The object's file was redone from the two whole records.
    db = journal_case.data_dir / "do/ns/a.sqlite"
    assert db.read_bytes()[4096:8192] == commit(2, 2).pages[2]
    j.start()
    await j.close()


async def test_a_failed_write_fails_its_commits_and_refuses_more_until_recovered(journal_case, disk: DiskLog) -> None:
    j = await started(journal_case)
    try:
        await asyncio.wait_for(j.append("do/ns/a.sqlite", commit(1, 1)), TIMEOUT)
        disk.fail(journal_case.segments()[-1], errno.ENOSPC)
        failed = j.append("do/ns/a.sqlite", commit(2, 2))
        with pytest.raises(StorageError, match="could not be made durable.*journal segment"):
            await asyncio.wait_for(failed, TIMEOUT)
        disk.heal()
        # Until it is recovered, the object's next commit would follow a record that is not there.
        with pytest.raises(StorageError):
            await asyncio.wait_for(j.append("do/ns/a.sqlite", commit(3, 3)), TIMEOUT)
        await asyncio.wait_for(j.append("do/ns/b.sqlite", commit(1, 7)), TIMEOUT)  # others go on
        link = j.link(journal_case.data_dir / "do/ns/a.sqlite")
        await asyncio.to_thread(link.recover)
        db = journal_case.data_dir / "do/ns/a.sqlite"
        assert db.read_bytes()[4096:8192] == commit(1, 1).pages[2]  # as of its last durable commit
        await asyncio.wait_for(j.append("do/ns/a.sqlite", commit(2, 4)), TIMEOUT)
        assert [c.seq for _, c in j.read("do/ns/a.sqlite")] == [1, 2]
    finally:
        disk.heal()
        await j.close()


async def test_a_clean_close_needs_no_redo(journal_case: JournalCase) -> None:
    j = await started(journal_case)
    await asyncio.wait_for(j.append("do/ns/a.sqlite", commit(1)), TIMEOUT)
    j.link(journal_case.data_dir / "do/ns/a.sqlite").synced(j._last["do/ns/a.sqlite"])
    await j.close()
    j = journal_case.make()
    report = j.open()
    assert report.clean and report.redone == 0
    j.start()
    await j.close()


def test_an_unwritable_journal_directory_is_a_clear_error(journal_case: JournalCase) -> None:
    if os.geteuid() == 0:
        journal_case.data_dir.mkdir(parents=True)
        (journal_case.data_dir / "journal").write_text("not a directory")
    else:  # pragma: no cover - CI runs as root
        journal_case.data_dir.mkdir(parents=True, mode=0o500)
    with pytest.raises(StorageError, match="journal directory .* is not writable"):
        journal_case.make().open()
