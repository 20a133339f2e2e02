"""The durability barrier's contract (:class:`duro.storage.durability.Barrier`), run against every
implementation in ``conftest.BARRIERS``: a future resolves only once the data is on disk, many
commits share one flush, one path's futures keep their order, a failed sync fails only that file's
commits with a StorageError, and ``close()`` finishes what was submitted."""

from __future__ import annotations

import asyncio
import errno
import os
import pathlib
from collections import Counter

import pytest

from duro.errors import StorageError
from duro.storage.durability import Barrier

from .disk import DiskLog, real

TIMEOUT = 10.0


async def durable(fut: "asyncio.Future[None] | None") -> None:
    """Wait for a submit to be durable (``None``: it already is)."""
    if fut is not None:
        await asyncio.wait_for(asyncio.shield(fut), TIMEOUT)


async def failure(fut: "asyncio.Future[None] | None") -> BaseException | None:
    """The exception a submit failed with, or None when it became durable."""
    try:
        await durable(fut)
    except asyncio.TimeoutError:
        raise
    except Exception as e:
        return e
    return None


async def turns(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def files(tmp_path: pathlib.Path, n: int) -> list[str]:
    out = []
    for i in range(n):
        p = tmp_path / f"f{i}-wal"
        p.write_bytes(b"commit %d" % i)
        out.append(str(p))
    return out


def test_it_is_a_barrier(barrier: Barrier) -> None:
    assert isinstance(barrier, Barrier)
    assert barrier.mode in ("fsync", "os")
    stats = barrier.statistics()
    assert set(stats) == {"mode", "commits", "flushes", "synced_files", "pending_files"}
    assert stats["mode"] == barrier.mode


async def test_a_future_resolves_only_after_the_file_is_synced(barrier, disk: DiskLog, tmp_path) -> None:
    [path] = files(tmp_path, 1)
    if barrier.mode != "fsync":
        await durable(barrier.submit(path))
        assert disk.datasynced == [], "durability 'os' must not fsync"
        return
    disk.block()
    fut = barrier.submit(path)
    assert fut is not None
    await disk.wait_blocked()
    await turns()
    assert not fut.done(), "resolved while its fdatasync had not returned"
    assert disk.datasynced == []
    disk.unblock()
    await durable(fut)
    assert disk.datasynced == [real(path)]


async def test_sync_dir_also_syncs_the_directory(barrier, disk: DiskLog, tmp_path) -> None:
    [path] = files(tmp_path, 1)
    await durable(barrier.submit(path, sync_dir=True))
    if barrier.mode == "fsync":
        assert disk.datasynced == [real(path)]
        assert real(tmp_path) in disk.synced, "a new file's directory entry was not made durable"
    else:
        assert disk.datasynced == disk.synced == []


async def test_concurrent_submits_share_flushes(barrier, disk: DiskLog, tmp_path) -> None:
    paths = files(tmp_path, 40)
    futs = [barrier.submit(p) for p in paths] + [barrier.submit(p) for p in paths[:5]]
    for fut in futs:
        await durable(fut)
    stats = barrier.statistics()
    assert stats["commits"] == 45
    assert stats["flushes"] < 45, "no group commit: one flush per submit"
    if barrier.mode == "fsync":
        # A path submitted again after a flush took it is synced again (the next test): a writer
        # thread may take a batch while the submits go on, so "once" is not the contract.
        synced, submitted = Counter(disk.datasynced), Counter(map(real, paths + paths[:5]))
        assert set(synced) == set(submitted), "every file synced"
        assert all(synced[p] <= submitted[p] for p in synced), ("a file synced more often than submitted", synced)


async def test_a_submit_during_a_flush_rides_the_next_one(barrier, disk: DiskLog, tmp_path) -> None:
    [path] = files(tmp_path, 1)
    if barrier.mode != "fsync":
        await durable(barrier.submit(path))
        await durable(barrier.submit(path))
        return
    disk.block()
    first = barrier.submit(path)
    await disk.wait_blocked()
    # Written after the running flush opened the file: that flush may have missed it.
    with open(path, "ab") as f:
        f.write(b"a later commit")
    second = barrier.submit(path)
    disk.unblock()
    await durable(first)
    await durable(second)
    assert disk.datasynced == [real(path)] * 2, "the later commit was resolved without a sync of its own"


async def test_one_paths_futures_resolve_in_submit_order(barrier, disk: DiskLog, tmp_path) -> None:
    a, b = files(tmp_path, 2)
    order: list[int] = []
    futs = []

    def submit(path: str, i: int) -> None:
        fut = barrier.submit(path)
        if fut is None:
            order.append(i)
        else:
            fut.add_done_callback(lambda _: order.append(i))
            futs.append(fut)

    if barrier.mode == "fsync":
        disk.block()
    submit(a, 0)
    submit(b, 100)
    if barrier.mode == "fsync":
        await disk.wait_blocked()  # a flush is running: the next submits make a second flush
    submit(a, 1)
    submit(a, 2)
    submit(b, 101)
    disk.unblock()
    for fut in futs:
        await durable(fut)
    await turns()  # a future already done when awaited returns at once, before its done-callbacks ran
    assert sorted(order) == [0, 1, 2, 100, 101]
    assert [i for i in order if i < 100] == [0, 1, 2]
    assert [i for i in order if i >= 100] == [100, 101]


@pytest.mark.parametrize("how", ["eio", "not-a-directory"])
async def test_a_failed_sync_fails_that_file_with_a_storage_error(barrier, disk: DiskLog, tmp_path, how) -> None:
    good, bad = files(tmp_path, 2)
    if how == "eio":
        disk.fail(bad, errno.EIO)  # the disk refuses: fdatasync raises EIO
        reason, cause_errno = os.strerror(errno.EIO), errno.EIO
    else:
        bad = os.path.join(bad, "wal")  # under a regular file: opening it fails
        reason, cause_errno = os.strerror(errno.ENOTDIR), errno.ENOTDIR
    good_fut, bad_fut = barrier.submit(good), barrier.submit(bad)
    assert await failure(good_fut) is None
    error = await failure(bad_fut)
    if barrier.mode != "fsync":
        assert error is None  # nothing is synced, so nothing can fail
        return
    assert isinstance(error, StorageError) and not isinstance(error, OSError), repr(error)
    assert bad in str(error) and reason in str(error), str(error)
    assert isinstance(error.__cause__, OSError) and error.__cause__.errno == cause_errno
    # The barrier keeps working: for other files, and for the same file once it can be synced.
    disk.heal()
    assert await failure(barrier.submit(good)) is None
    if how == "eio":
        assert await failure(barrier.submit(bad)) is None
        assert disk.datasynced.count(real(bad)) == 1


async def test_every_commit_of_a_failed_file_fails(barrier, disk: DiskLog, tmp_path) -> None:
    [bad] = files(tmp_path, 1)
    disk.fail(bad, errno.EIO)
    futs = [barrier.submit(bad) for _ in range(4)]  # one flush: the same failure for all four
    errors = [await failure(f) for f in futs]
    if barrier.mode == "fsync":
        assert all(isinstance(e, StorageError) for e in errors), errors
        assert len({id(e) for e in errors}) == len(errors), "one exception object raised in several places"
    else:
        assert errors == [None] * 4


async def test_a_removed_file_counts_as_durable(barrier, disk: DiskLog, tmp_path) -> None:
    # SQLite removes a -wal only after checkpointing it into the database file, which it syncs.
    await durable(barrier.submit(str(tmp_path / "gone-wal")))
    assert disk.datasynced == []


async def test_close_finishes_pending_work(barrier, disk: DiskLog, tmp_path) -> None:
    paths = files(tmp_path, 5)
    if barrier.mode == "fsync":
        disk.block()
    futs = [barrier.submit(p) for p in paths]
    if barrier.mode == "fsync":
        await disk.wait_blocked()
    closing = asyncio.ensure_future(barrier.close())
    await turns()
    if barrier.mode == "fsync":
        assert not closing.done(), "close() returned with a flush still running"
    disk.unblock()
    await asyncio.wait_for(closing, TIMEOUT)
    assert all(f is None or (f.done() and f.exception() is None) for f in futs)
    if barrier.mode == "fsync":
        # (A journal also syncs its own segment as it closes: only the submitted files count.)
        mine = [p for p in disk.datasynced if p.startswith(real(tmp_path))]
        assert sorted(mine) == sorted(map(real, paths))
    # After close: a barrier that would hand out a future refuses; close() again is harmless.
    try:
        late = barrier.submit(paths[0])
    except RuntimeError:
        pass
    else:
        assert late is None
    await asyncio.wait_for(barrier.close(), TIMEOUT)
