"""A NATS server crash under load, on a 3-server cluster of its own: SIGKILL the journal stream's
leader while an owner appends to several objects; appends stall for one leader election, then
resume (the time is printed); nothing acknowledged is lost; the killed server, restarted, reports
itself healthy (caught up) again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from duro.cluster.journal import STREAM, JetStreamJournal
from duro.cluster.leases import LeaseOptions, Leases, NodeRegistry
from duro.cluster.testing import NatsServers

from .child import commit

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


@pytest.fixture(scope="module")
def own3() -> Iterator[NatsServers]:
    with NatsServers(3) as servers:
        yield servers


async def test_appends_resume_after_the_stream_leader_is_killed(own3, connect) -> None:
    nc = await connect(own3, max_reconnect_attempts=-1, reconnect_time_wait=0.2, ping_interval=1,
                       max_outstanding_pings=2)
    js = nc.jetstream(timeout=5)
    # A TTL longer than an election: this test is about the journal, not about self-fencing.
    reg = NodeRegistry(js, "sk", LeaseOptions(ttl=30, renew_every=1, margin=1))
    await reg.register()
    leases = await Leases(reg).open()
    journal = await JetStreamJournal(js, timeout=2.0, retry_for=20.0).open()
    keys = [f"sk-{i}" for i in range(4)]
    logs = {k: await journal.take(await leases.claim(k), reg) for k in keys}
    acked: dict[str, list[int]] = {k: [] for k in keys}
    ack_times: list[float] = []
    failures: list[str] = []
    stop = asyncio.Event()

    async def write(key: str) -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            try:
                await logs[key].append(commit(seq))
            except Exception as e:  # the object resets and is taken again, as the runtime would
                failures.append(f"{key}: {type(e).__name__}")
                while not stop.is_set():
                    try:
                        logs[key] = await journal.take(logs[key].lease, reg)
                        break
                    except Exception:
                        await asyncio.sleep(0.2)
                seq = len(logs[key].rebuilt.records)
                continue
            acked[key].append(seq)
            ack_times.append(time.monotonic())
            await asyncio.sleep(0.002)

    writers = [asyncio.ensure_future(write(k)) for k in keys]
    try:
        while len(ack_times) < 100:
            await asyncio.sleep(0.01)
        leader = (await js.stream_info(STREAM)).cluster.leader
        victim = next(s for s in own3.servers if s.name == leader)
        killed = time.monotonic()
        own3.kill(victim)
        deadline = killed + 40
        while sum(t > killed for t in ack_times) < 50:
            assert time.monotonic() < deadline, f"appends did not resume within 40 s ({failures[-3:]})"
            await asyncio.sleep(0.02)
        times = sorted(ack_times)
        stall = max(b - a for a, b in zip(times, times[1:]) if b > killed)  # the gap the kill opened
        own3.launch(victim)
        relaunched = time.monotonic()
        own3.wait_ready(60)
        healthy = time.monotonic() - relaunched
        print(f"stream leader {leader} SIGKILLed: appends stalled {stall:.2f} s, then resumed; "
              f"{len(failures)} appends failed and were redone by a take-over; "
              f"restarted, it was healthy after {healthy:.2f} s")
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*writers, return_exceptions=True), 60)
    for k in keys:
        got, _, _ = await journal.rebuild(k)
        stored = [r.capture().seq for r in got.records]
        assert stored == list(range(1, len(stored) + 1)), k  # one chain, no hole, no repeat
        assert set(acked[k]) <= set(stored), k  # nothing acknowledged lost
        assert got.records[-1].capture() == commit(stored[-1])
    await reg.close()
