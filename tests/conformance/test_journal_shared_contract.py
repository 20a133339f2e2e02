"""The commit journal's contract every implementation keeps (DESIGN.md §3; ``conftest.SHARED_JOURNALS``:
the node journal and the JetStream journal): an append is acknowledged once it is durable and reads
back byte for byte, in order, from any position, after a restart too; many objects' appends are in
flight at once; a record whose write was never acknowledged is never half there; a commit of megabytes
is one commit like any other; once an object's
file holds its records, they are no longer needed while other objects keep theirs; a damaged
record stops its own object, and only it. The file-specific rest (segments, fdatasync, SYNCED
markers, disk errors) is ``test_journal_contract.py``."""

from __future__ import annotations

import asyncio

import pytest

from duro.errors import CorruptDatabaseError

from .test_journal_contract import commit

TIMEOUT = 20.0


async def test_appends_read_back_in_order_from_any_position(any_journal) -> None:
    for s in (1, 2, 3):
        await asyncio.wait_for(any_journal.append("a", commit(s, s)), TIMEOUT)
    await asyncio.wait_for(any_journal.append("b", commit(1, 9)), TIMEOUT)
    got = await any_journal.read("a")
    assert [c.seq for _, c in got] == [1, 2, 3]
    assert got[1][1] == commit(2, 2)  # pages, holes and all, byte for byte
    assert [p for p, _ in got] == sorted(p for p, _ in got)  # positions sort like the commits
    assert [c.seq for _, c in await any_journal.read("a", after=got[0][0])] == [2, 3]
    assert [c.seq for _, c in await any_journal.read("b")] == [1]
    assert await any_journal.read("never-written") == []


async def test_a_commit_of_megabytes_is_acknowledged_and_reads_back_whole(any_journal) -> None:
    # 2.4 MB of pages that cannot be compressed away: more than one JetStream message may hold.
    big = commit(2, 5, pages=600, dense=True)
    for c in (commit(1, 1), big, commit(3, 3)):
        await asyncio.wait_for(any_journal.append("a", c), TIMEOUT)
    got = await any_journal.read("a")
    assert [c.seq for _, c in got] == [1, 2, 3]
    assert got[1][1] == big
    await any_journal.restart(crash=True)
    assert (await any_journal.state("a"))[4096:8192] == commit(3, 3).pages[2]


async def test_many_objects_appends_are_in_flight_together(any_journal) -> None:
    futs = [any_journal.append(f"o{i}", commit(1, i)) for i in range(30)]
    futs += [any_journal.append("o0", commit(s, s)) for s in (2, 3, 4)]  # behind its first one
    await asyncio.wait_for(asyncio.gather(*futs), TIMEOUT)
    assert [c.seq for _, c in await any_journal.read("o0")] == [1, 2, 3, 4]
    assert (await any_journal.read("o29"))[0][1] == commit(1, 29)


@pytest.mark.parametrize("crash", [False, True])
async def test_everything_acknowledged_is_there_after_a_restart(any_journal, crash: bool) -> None:
    for s in (1, 2, 3):
        await asyncio.wait_for(any_journal.append("a", commit(s, s)), TIMEOUT)
    await any_journal.restart(crash=crash)
    assert (await any_journal.state("a"))[4096:8192] == commit(3, 3).pages[2]  # redone from the journal
    await asyncio.wait_for(any_journal.append("a", commit(4, 4)), TIMEOUT)  # and it goes on from there
    assert (await any_journal.read("a"))[-1][1] == commit(4, 4)


async def test_an_unacknowledged_tail_is_whole_or_absent(any_journal) -> None:
    for s in (1, 2):
        await asyncio.wait_for(any_journal.append("a", commit(s, s)), TIMEOUT)
    await any_journal.lose_tail("a", commit(3, 3))
    await any_journal.restart()
    page = (await any_journal.state("a"))[4096:8192]
    assert page in (commit(2, 2).pages[2], commit(3, 3).pages[2])  # never a part of it
    seq = 3 if page == commit(2, 2).pages[2] else 4
    await asyncio.wait_for(any_journal.append("a", commit(seq, 7)), TIMEOUT)
    assert (await any_journal.read("a"))[-1][1] == commit(seq, 7)


async def test_records_an_objects_file_holds_are_no_longer_needed(any_journal) -> None:
    """Once an object's file holds its records, the journal may drop them (the node journal drops
    a segment once nothing in it is needed; the JetStream journal reads on from the snapshot);
    an object that was never retained keeps all of its records."""
    for s in range(1, 40):  # ~40 x 4 KB pages: several of the node journal's 64 KB segments
        await asyncio.wait_for(any_journal.append("hot", commit(s, s, dense=True)), TIMEOUT)
    await any_journal.retain("hot")
    await asyncio.wait_for(any_journal.append("keep", commit(1, 5)), TIMEOUT)
    for s in range(1, 40):
        await asyncio.wait_for(any_journal.append("hot2", commit(s, s, dense=True)), TIMEOUT)
    left = [c.seq for _, c in await any_journal.read("hot")]
    assert len(left) < 10 and left == list(range(40 - len(left), 40)), left  # at most a tail shares a segment
    assert [c.seq for _, c in await any_journal.read("keep")] == [1]
    assert len(await any_journal.read("hot2")) == 39
    await asyncio.wait_for(any_journal.append("hot", commit(40, 40)), TIMEOUT)
    assert [c.seq for _, c in await any_journal.read("hot")][-1] == 40


async def test_a_damaged_record_stops_only_its_object(any_journal) -> None:
    for s in (1, 2, 3):
        await asyncio.wait_for(any_journal.append("a", commit(s, s)), TIMEOUT)
        await asyncio.wait_for(any_journal.append("b", commit(s, 50 + s)), TIMEOUT)
    await any_journal.damage("a", commit(2, 2))
    await any_journal.restart()
    with pytest.raises(CorruptDatabaseError, match="fails its checksum"):
        await any_journal.check("a")
    await any_journal.check("b")
    assert [c for _, c in await any_journal.read("b")] == [commit(s, 50 + s) for s in (1, 2, 3)]
