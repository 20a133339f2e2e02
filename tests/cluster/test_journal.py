"""The JetStream journal on a real nats-server: commits are acknowledged once stored, ride one
message when they pile up behind an append in flight, and read back (snapshot + records, hash chain
verified) on a new owner, which appends its epoch record first; a stale owner is fenced; a broken
chain or a damaged record stops the object; a retried append is stored once."""

from __future__ import annotations

import asyncio

import pytest

from duro.cluster.journal import STREAM, ChainBrokenError, FencedError, JetStreamJournal
from duro.cluster.leases import LeaseOptions, Leases, NodeRegistry, SelfFencedError
from duro.errors import StorageError
from duro.storage.durability import JournalLink
from duro.storage.journalfile import Capture, encode_commit

from .child import commit

TIMEOUT = 20.0


async def setup(connect, servers, name: str, **kw):
    nc = await connect(servers)
    js = nc.jetstream(timeout=5)
    reg = NodeRegistry(js, name, LeaseOptions(replicas=servers.replicas, **kw))
    await reg.register()
    journal = await JetStreamJournal(js, replicas=servers.replicas).open()
    return js, reg, await Leases(reg).open(), journal


async def test_appends_are_acknowledged_grouped_and_rebuilt_by_the_next_owner(nats1, connect, tmp_path) -> None:
    js, a, la, journal = await setup(connect, nats1, "ja-a")
    _, b, lb, _ = await setup(connect, nats1, "ja-b")
    lease = await la.claim("ja-obj")
    olog = await asyncio.wait_for(journal.take(lease, a), TIMEOUT)
    assert olog.rebuilt.records == [] and olog.position() > 0  # its epoch record is in
    futs = [olog.append(commit(s)) for s in range(1, 41)]
    await asyncio.wait_for(asyncio.gather(*futs), TIMEOUT)
    assert olog.messages <= 3, olog.messages  # 40 commits behind one append in flight: a few messages
    await olog.snapshot(b"S" * 8192)  # the file as of every acknowledged commit
    for s in range(41, 44):
        await asyncio.wait_for(olog.append(commit(s)), TIMEOUT)
    assert await la.release(lease)
    taken = await asyncio.wait_for(journal.take(await lb.claim("ja-obj"), b), TIMEOUT)
    got = taken.rebuilt
    assert got.snapshot == b"S" * 8192
    assert [r.capture().seq for r in got.records] == [41, 42, 43]  # only what came after the snapshot
    assert got.records[0].capture() == commit(41)  # byte for byte
    assert got.epochs == []  # the first epoch record is covered by the snapshot
    db = taken.materialize(tmp_path, "do/ns/obj.sqlite")
    data = db.read_bytes()
    assert data[:4096] == b"S" * 4096 and data[4096:8192] == commit(43).pages[2]
    # The old owner is fenced by the new owner's epoch record.
    with pytest.raises(FencedError, match="moved to another owner") as e:
        await asyncio.wait_for(olog.append(commit(44)), TIMEOUT)
    assert e.value.retryable
    with pytest.raises(FencedError):  # and stays fenced
        await asyncio.wait_for(olog.append(commit(45)), TIMEOUT)
    await asyncio.wait_for(taken.append(commit(44)), TIMEOUT)
    await a.close()
    await b.close()


async def test_a_retried_append_is_stored_once(nats1, connect) -> None:
    """The answer to an append can be lost (a timeout): the retry carries the same Msg-Id and the
    same expected sequence, and the server answers it with the first one's sequence."""
    js, a, la, journal = await setup(connect, nats1, "jr-a")
    olog = await journal.take(await la.claim("jr-obj"), a)
    before = olog.position()
    record = encode_commit(1, olog.lease.epoch, b"jr-obj", commit(1))
    headers = olog.headers()
    first = await js.publish(journal.subject("jr-obj"), olog._head + record, headers=headers)  # its ack "lost"
    seq = await olog._send([record])  # the owner's retry
    assert seq == first.seq
    msgs, _ = await journal.read("jr-obj")
    assert [s for s, _, _ in msgs] == [before, seq]  # the epoch record and one commit, not two
    await a.close()


async def test_a_broken_chain_or_a_damaged_record_stops_the_object(nats1, connect) -> None:
    js, a, la, journal = await setup(connect, nats1, "jc-a")
    olog = await journal.take(await la.claim("jc-obj"), a)
    await olog.append(commit(1))
    # A message that does not name the one before it (a lost record, or a writer that skipped the
    # chain): the next owner refuses to serve the object.
    await js.publish(journal.subject("jc-obj"), bytes(32) + encode_commit(2, 1, b"jc-obj", commit(2)))
    with pytest.raises(ChainBrokenError, match="hash chain is broken"):
        await journal.rebuild("jc-obj")
    olog2 = await journal.take(await la.claim("jc-dmg"), a)
    record = bytearray(encode_commit(1, olog2.lease.epoch, b"jc-dmg", commit(1)))
    record[-10] ^= 0xFF  # bit rot inside the record, under a valid chain link
    await olog2._send([bytes(record)])
    with pytest.raises(StorageError, match=f"journal record 1 at {STREAM}:.* fails its checksum"):
        await journal.rebuild("jc-dmg")
    await a.close()


async def test_a_node_that_cannot_renew_appends_nothing(nats1, connect) -> None:
    js, a, la, journal = await setup(connect, nats1, "jf-a", ttl=2, renew_every=0.5, margin=0.5)
    olog = await journal.take(await la.claim("jf-obj"), a)
    await olog.append(commit(1))
    a._task.cancel()  # its renewals hang
    while a.writable():
        await asyncio.sleep(0.02)
    before = olog.position()
    with pytest.raises(SelfFencedError):
        await asyncio.wait_for(olog.append(commit(2)), TIMEOUT)
    tail, _ = await journal.tail("jf-obj")
    assert tail == before  # nothing was sent


def big_commit(seq: int, pages: int = 400) -> Capture:
    """A commit of ``pages`` 4 KiB pages (1.6 MB for 400): over a server's default 1 MB message."""
    return Capture(seq, 1, 1, pages, {p: bytes([(p + seq) % 250 + 1]) * 4096 for p in range(2, pages)}, bytes(16))


async def test_a_commit_larger_than_a_message_is_appended_in_parts_and_rebuilt(nats1, connect) -> None:
    js, a, la, journal = await setup(connect, nats1, "jo-a")
    _, b, lb, _ = await setup(connect, nats1, "jo-b")
    assert journal.max_payload == 1 << 20  # what the server's INFO says (its default)
    lease = await la.claim("jo-obj")
    olog = await journal.take(lease, a)
    before = olog.messages
    await asyncio.wait_for(olog.append(commit(1)), TIMEOUT)
    await asyncio.wait_for(olog.append(big_commit(2)), TIMEOUT)
    assert olog.messages - before == 1 + 2  # the big one took two messages
    await asyncio.wait_for(olog.append(commit(3)), TIMEOUT)
    assert await la.release(lease)
    taken = await asyncio.wait_for(journal.take(await lb.claim("jo-obj"), b), TIMEOUT)
    assert [r.capture().seq for r in taken.rebuilt.records] == [1, 2, 3]
    assert taken.rebuilt.records[1].capture() == big_commit(2)  # joined byte for byte


async def test_an_unfinished_large_append_is_dropped_by_the_next_owner(nats1, connect) -> None:
    js, a, la, journal = await setup(connect, nats1, "ju-a")
    _, b, lb, _ = await setup(connect, nats1, "ju-b")
    lease = await la.claim("ju-obj")
    olog = await journal.take(lease, a)
    await asyncio.wait_for(olog.append(commit(1)), TIMEOUT)
    # The owner dies between the parts of an append: its first part is in, its last never came.
    body = encode_commit(2, lease.epoch, b"ju-obj", big_commit(2))
    await olog._send_one(body[:600_000], "more")
    assert await la.release(lease)
    taken = await asyncio.wait_for(journal.take(await lb.claim("ju-obj"), b), TIMEOUT)
    assert [r.capture().seq for r in taken.rebuilt.records] == [1]  # the part is not a commit
    await asyncio.wait_for(taken.append(commit(2)), TIMEOUT)  # the next owner's EPOCH, then its own
    got, _, _ = await journal.rebuild("ju-obj")
    assert [r.capture().seq for r in got.records] == [1, 2]
    assert got.records[1].capture() == commit(2)


async def test_it_is_a_journal_link_and_recovers_after_a_failed_append(nats1, connect, tmp_path) -> None:
    js, a, la, journal = await setup(connect, nats1, "jl-a", ttl=6, renew_every=1, margin=3)
    olog = await journal.take(await la.claim("jl-obj"), a)
    assert isinstance(olog, JournalLink)
    olog.bind(tmp_path, "do/ns/jl.sqlite")
    for s in (1, 2):
        await asyncio.wait_for(olog.append(commit(s)), TIMEOUT)
    assert await asyncio.to_thread(olog.wait_durable, olog.position())
    a._task.cancel()  # its renewals stop: the node self-fences, and the append fails
    while a.writable():
        await asyncio.sleep(0.02)
    with pytest.raises(SelfFencedError):
        await asyncio.wait_for(olog.append(commit(3)), TIMEOUT)
    assert await a.renew()  # registered again, before its registration expired
    with pytest.raises(SelfFencedError):  # broken until recovered
        await asyncio.wait_for(olog.append(commit(3)), TIMEOUT)
    await asyncio.to_thread(olog.check_open)  # recovers: takes the object again, redoes its file
    assert (tmp_path / "do/ns/jl.sqlite").read_bytes()[4096:8192] == commit(2).pages[2]
    await asyncio.wait_for(olog.append(commit(3)), TIMEOUT)
    got, _, _ = await journal.rebuild("jl-obj")
    assert [r.capture().seq for r in got.records] == [1, 2, 3]
    assert got.epochs == [olog.lease.epoch, olog.lease.epoch]  # taken twice by one lease
    await a.close()


async def test_a_dropped_objects_unacknowledged_appends_fail_at_once(nats1, tmp_path) -> None:
    """A node that self-fences drops its objects; their writes waiting for an acknowledgement from
    servers that no longer answer (a partition) fail then, retryably, not when their sends give up
    (``retry_for``, 20 s here): its clients get their answer within its lease. Without
    ``ObjectLog.abandon`` in ``ClusterNode.drop`` the append stays pending (checked)."""
    import types

    import nats

    from duro.cluster.node import ClusterLink, ClusterNode, Owned

    from .netproxy import LinkProxy

    proxy = LinkProxy([nats1.servers[0].port]).start()
    nc = None
    try:
        nc = await nats.connect(proxy.urls, ping_interval=1, max_outstanding_pings=2, max_reconnect_attempts=-1,
                                reconnect_time_wait=0.2)
        js = nc.jetstream(timeout=5)
        reg = NodeRegistry(js, "jd-a", LeaseOptions(replicas=1, ttl=30, renew_every=1, margin=1))
        await reg.register()
        journal = await JetStreamJournal(js, replicas=1, timeout=2.0, retry_for=20.0).open()
        olog = await asyncio.wait_for(journal.take(await (await Leases(reg).open()).claim("jd-obj"), reg), TIMEOUT)
        await asyncio.wait_for(olog.append(commit(1)), TIMEOUT)
        proxy.blackhole()
        waiting = [olog.append(commit(2)), olog.append(commit(3))]  # one in flight, one queued behind it
        await asyncio.sleep(0.3)
        assert not any(f.done() for f in waiting)
        node = ClusterNode(types.SimpleNamespace(find=lambda ns, hex_id: None), proxy.urls, "jd-a")
        node.owned["jd-obj"] = Owned("ns", "jd", olog, ClusterLink(node, "jd-obj", olog))
        await node.drop("jd-obj", SelfFencedError("jd-a could not renew its registration in time"))
        for f in waiting:
            with pytest.raises(SelfFencedError) as e:
                await asyncio.wait_for(f, 1.0)
            assert e.value.retryable
        with pytest.raises(SelfFencedError):  # nothing more goes through this handle
            await asyncio.wait_for(olog.append(commit(4)), 1.0)
    finally:
        proxy.heal()
        if nc is not None:
            await nc.close()
        proxy.stop()


async def test_a_node_whose_registration_comes_back_releases_the_objects_it_dropped(nats1, connect, tmp_path) -> None:
    """A node's renewals stall past ``ttl - margin`` (its link to the servers hung), so it drops its
    objects, self-fenced; then they succeed again before the registration expired: the same run is
    registered and live again. The leases of the objects it dropped must not stay held by a live
    node that serves none of them (no other node could take them while it lives): it releases them
    once it can write, and another node claims them at once. Without that the claim below is
    refused as long as the node lives (checked)."""
    import time
    import types

    from duro.cluster.leases import LeaseHeldError
    from duro.cluster.node import ClusterLink, ClusterNode, Owned

    _, reg, leases, journal = await setup(connect, nats1, "jz-a", ttl=30, renew_every=1, margin=1)
    _, _, other, _ = await setup(connect, nats1, "jz-b", ttl=30, renew_every=1, margin=1)
    olog = await asyncio.wait_for(journal.take(await leases.claim("jz-obj"), reg), TIMEOUT)
    await asyncio.wait_for(olog.append(commit(1)), TIMEOUT)
    runtime = types.SimpleNamespace(find=lambda ns, hex_id: None,
                                    db_path=lambda ns, hex_id: tmp_path / f"{hex_id}.sqlite")
    node = ClusterNode(runtime, nats1.urls, "jz-a")
    node.registry, node.leases, node.journal = reg, leases, journal
    node.owned["jz-obj"] = Owned("ns", "jz", olog, ClusterLink(node, "jz-obj", olog))
    watch = asyncio.ensure_future(node._watch_registration())
    try:
        assert reg._task is not None
        reg._task.cancel()  # renewals stall ...
        with pytest.raises(asyncio.CancelledError):
            await reg._task
        reg._valid_until = time.monotonic()  # ... past ttl - margin: the node may not write
        deadline = time.monotonic() + 10
        while node.owned:
            assert time.monotonic() < deadline, "the node did not drop its object"
            await asyncio.sleep(0.02)
        with pytest.raises(LeaseHeldError):
            await other.claim("jz-obj")  # the node is still registered (ttl 30 s): its lease holds
        reg._task = asyncio.get_running_loop().create_task(reg._renew_forever())  # ... and resume
        deadline = time.monotonic() + 10
        while True:
            try:
                lease = await other.claim("jz-obj")
                break
            except LeaseHeldError:
                assert time.monotonic() < deadline, "the lease of the dropped object stayed held by a live node"
                await asyncio.sleep(0.1)
        assert reg.writable() and reg._lost is None  # the same run, registered again all along
        taken = await asyncio.wait_for(journal.take(lease, other.registry), TIMEOUT)
        assert [r.capture().seq for r in taken.rebuilt.records] == [1]
    finally:
        watch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watch
        await reg.close()
