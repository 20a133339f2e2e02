"""The durability barrier on real files: one flush covers every commit submitted before it starts,
a few worker threads share a flush's files, each file is really fdatasync'd (os.fdatasync is wrapped
to record the file it was called for, and still syncs), and one file that cannot be synced fails
only the commits that wrote to it, with a StorageError. The contract every barrier keeps is tested
in tests/conformance/test_barrier_contract.py."""

import asyncio
import errno
import os

import pytest

from duro.errors import StorageError
from duro.runtime.barrier import DurabilityBarrier
from tests.conformance.disk import DiskLog, real


@pytest.fixture
def disk(monkeypatch):
    log = DiskLog().install(monkeypatch)
    yield log
    log.unblock()


async def test_a_flush_syncs_every_file_and_a_bad_one_fails_alone(tmp_path, disk):
    barrier = DurabilityBarrier("fsync", threads=3)
    barrier.start()
    paths = []
    for i in range(50):
        p = tmp_path / f"f{i}"
        p.write_bytes(b"x")
        paths.append(str(p))
    bad = str(tmp_path / "f0" / "not-a-directory")  # opening it fails with NotADirectoryError
    futs = [barrier.submit(p) for p in paths] + [barrier.submit(paths[7])]
    bad_fut = barrier.submit(bad, sync_dir=True)
    results = await asyncio.gather(*futs, bad_fut, return_exceptions=True)
    assert results[:-1] == [None] * 51
    error = results[-1]
    assert isinstance(error, StorageError) and not isinstance(error, OSError)
    assert str(error) == f"the commit could not be made durable: open of {bad!r} failed: Not a directory"
    assert isinstance(error.__cause__, NotADirectoryError)
    # Every good file was fdatasync'd, once although paths[7] was submitted twice.
    assert sorted(disk.datasynced) == sorted(map(real, paths))
    stats = barrier.statistics()
    assert stats["flushes"] == 1 and stats["synced_files"] == 51 and stats["commits"] == 52
    # Later commits ride a later flush.
    await barrier.submit(paths[0])
    assert barrier.statistics()["flushes"] == 2
    assert disk.datasynced.count(real(paths[0])) == 2
    await barrier.close()
    with pytest.raises(RuntimeError, match="closed"):
        barrier.submit(paths[0])


async def test_the_future_waits_for_the_fdatasync_of_its_file(tmp_path, disk):
    barrier = DurabilityBarrier("fsync")
    wal = tmp_path / "a.sqlite-wal"
    wal.write_bytes(b"a commit")
    disk.block()
    fut = barrier.submit(str(wal), sync_dir=True)
    await disk.wait_blocked()
    for _ in range(20):
        await asyncio.sleep(0)
    assert not fut.done() and disk.datasynced == []
    disk.unblock()
    await asyncio.wait_for(fut, 10)
    assert disk.datasynced == [real(wal)]
    assert disk.synced == [real(tmp_path)]  # sync_dir: the new file's directory entry
    await barrier.close()


async def test_an_eio_from_fdatasync_becomes_a_storage_error_naming_the_file(tmp_path, disk):
    barrier = DurabilityBarrier("fsync")
    good, bad = tmp_path / "good-wal", tmp_path / "bad-wal"
    good.write_bytes(b"x")
    bad.write_bytes(b"x")
    disk.fail(bad, errno.EIO)
    good_fut, bad_fut = barrier.submit(str(good)), barrier.submit(str(bad))
    await asyncio.wait_for(good_fut, 10)
    with pytest.raises(StorageError) as info:
        await asyncio.wait_for(bad_fut, 10)
    assert str(info.value) == (f"the commit could not be made durable: fdatasync of {str(bad)!r} failed: "
                               f"{os.strerror(errno.EIO)}")
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.EIO
    disk.heal()
    await asyncio.wait_for(barrier.submit(str(bad)), 10)  # the same file, once the disk recovers
    assert disk.datasynced == [real(good), real(bad)]
    await barrier.close()


async def test_os_mode_waits_for_nothing(tmp_path, disk):
    barrier = DurabilityBarrier("os")
    path = tmp_path / "anything"
    path.write_bytes(b"x")
    assert barrier.submit(os.fspath(path)) is None
    assert barrier.statistics()["commits"] == 1
    await barrier.close()
    assert disk.datasynced == disk.synced == []


async def test_a_crashed_flush_loop_fails_its_waiters_instead_of_hanging(tmp_path, caplog):
    b = DurabilityBarrier("fsync")
    b.start()
    b._pool = object()  # an executor that cannot run anything: the flush loop raises (a bug of ours)
    f = tmp_path / "x-wal"
    f.write_bytes(b"x")
    fut = b.submit(str(f))
    with pytest.raises(StorageError, match="could not be made durable"):
        await asyncio.wait_for(fut, 5)
    assert "the durability barrier crashed" in caplog.text
    with pytest.raises(RuntimeError, match="closed"):
        b.submit(str(f))
    b._pool = None
    with pytest.raises(AttributeError):
        await b.close()  # the crash is raised again to the owner that stops it
