"""The ambiguous "wrong last sequence" answer, on a server of its own (its stream has a 1 s duplicate
window, so a retry can outlive it): an append that landed but whose answer was lost, retried after
the window, is refused as "wrong last sequence"; the owner reads the tail, finds its own Msg-Id
there and counts the append as done, once, instead of reporting itself fenced."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from duro.cluster.journal import JetStreamJournal
from duro.cluster.leases import LeaseOptions, Leases, NodeRegistry
from duro.cluster.testing import NatsServers
from duro.storage.journalfile import encode_commit

from .child import commit


@pytest.fixture(scope="module")
def own_server() -> Iterator[NatsServers]:
    with NatsServers(1) as servers:
        yield servers


async def test_a_refused_retry_of_an_append_that_landed_counts_once(own_server, connect) -> None:
    nc = await connect(own_server)
    js = nc.jetstream(timeout=5)
    reg = NodeRegistry(js, "amb", LeaseOptions(replicas=1))
    await reg.register()
    journal = await JetStreamJournal(js, replicas=1, duplicate_window=1.0).open()
    olog = await journal.take(await (await Leases(reg).open()).claim("amb-obj"), reg)
    before = olog.position()
    record = encode_commit(1, olog.lease.epoch, b"amb-obj", commit(1))
    landed = await js.publish(journal.subject("amb-obj"), olog._head + record, headers=olog.headers())
    await asyncio.sleep(1.5)  # the duplicate window has passed: the server no longer knows the Msg-Id
    seq = await asyncio.wait_for(olog._send([record]), 20)
    assert seq == landed.seq
    msgs, _ = await journal.read("amb-obj")
    assert [s for s, _, _ in msgs] == [before, landed.seq]  # the epoch record and the commit, once
    await asyncio.wait_for(olog.append(commit(2)), 20)  # and the owner goes on from there
    got, _, _ = await journal.rebuild("amb-obj")
    assert [r.capture().seq for r in got.records] == [1, 2]
    await reg.close()
