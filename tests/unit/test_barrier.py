"""The durability barrier on real files: one flush covers every commit submitted before it starts,
a few worker threads share a flush's files, and one file that cannot be synced fails only the
commits that wrote to it."""

import asyncio
import os

import pytest

from duro.runtime.barrier import DurabilityBarrier


async def test_a_flush_syncs_every_file_and_a_bad_one_fails_alone(tmp_path):
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
    assert isinstance(results[-1], OSError) and bad in str(results[-1])
    stats = barrier.statistics()
    assert stats["flushes"] == 1 and stats["synced_files"] == 51 and stats["commits"] == 52
    # Later commits ride a later flush.
    await barrier.submit(paths[0])
    assert barrier.statistics()["flushes"] == 2
    await barrier.close()
    with pytest.raises(RuntimeError, match="closed"):
        barrier.submit(paths[0])


async def test_os_mode_waits_for_nothing(tmp_path):
    barrier = DurabilityBarrier("os")
    assert barrier.submit(os.fspath(tmp_path / "anything")) is None
    await barrier.close()
