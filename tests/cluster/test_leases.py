"""Node registration and object leases against real nats-servers: a name is registered once, a
lease is exclusive while its owner lives, a release hands over at once, a dead owner's objects move
after its TTL, a node that cannot renew stops writing, and many real processes claiming the same
objects never leave one with two live owners."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time

import pytest

from duro.cluster.leases import (LeaseHeldError, LeaseOptions, Leases, NodeNameTakenError, NodeRegistry,
                                 SelfFencedError, object_key)
from duro.errors import DuroError, InvalidInputError

from .conftest import CHILD, ROOT

TIMEOUT = 20.0


async def node(connect, servers, name: str, **kw) -> tuple[NodeRegistry, Leases]:
    nc = await connect(servers)
    options = LeaseOptions(replicas=servers.replicas, **kw)
    reg = NodeRegistry(nc.jetstream(timeout=5), name, options)
    await reg.register()
    return reg, await Leases(reg).open()


async def test_a_name_is_registered_once_and_a_lease_is_exclusive(nats1, connect) -> None:
    a, la = await node(connect, nats1, "lx-a")
    b, lb = await node(connect, nats1, "lx-b")
    with pytest.raises(NodeNameTakenError, match="a node named 'lx-a' is already registered"):
        await NodeRegistry(a.js, "lx-a", a.options).register()
    lease = await la.claim("lx-obj")
    with pytest.raises(LeaseHeldError, match="owned by node 'lx-a'"):
        await lb.claim("lx-obj")
    assert (await la.claim("lx-obj")).epoch == lease.epoch  # claiming one's own lease again changes nothing
    # A graceful release hands it over at once: no TTL to wait out.
    t0 = time.monotonic()
    assert await la.release(lease)
    taken = await lb.claim("lx-obj")
    assert time.monotonic() - t0 < 1.0
    assert taken.epoch > lease.epoch  # the fencing token only grows
    assert not await la.release(lease)  # a stale lease releases nothing
    assert await lb.owner("lx-obj") == ("lx-b", taken.epoch)
    await a.close()
    await b.close()


async def test_a_dead_owners_objects_move_after_its_ttl(nats1, connect) -> None:
    a, la = await node(connect, nats1, "ld-a", ttl=2, renew_every=0.5)
    b, lb = await node(connect, nats1, "ld-b", ttl=2, renew_every=0.5)
    lease = await la.claim("ld-obj")
    await a.close(deregister=False)  # it stops renewing, as a crashed node would
    t0 = time.monotonic()
    while True:
        try:
            taken = await lb.claim("ld-obj")
            break
        except LeaseHeldError:
            assert time.monotonic() - t0 < 6, "the dead owner's lease never expired"
            await asyncio.sleep(0.05)
    took = time.monotonic() - t0
    print(f"takeover after the owner stopped renewing: {took:.2f} s (ttl 2 s)")
    assert 1.0 < took < 6 and taken.epoch > lease.epoch
    # The take-over wrote the new owner into the lease: a third node must not take it again.
    assert await lb.owner("ld-obj") == ("ld-b", taken.epoch)
    c, lc = await node(connect, nats1, "ld-c", ttl=2, renew_every=0.5)
    with pytest.raises(LeaseHeldError, match="owned by node 'ld-b'"):
        await lc.claim("ld-obj")
    await b.close()
    await c.close()


async def test_a_lease_says_which_object_and_orphans_are_found(nats1, connect) -> None:
    a, la = await node(connect, nats1, "lo-a", ttl=2, renew_every=0.5)
    b, lb = await node(connect, nats1, "lo-b", ttl=2, renew_every=0.5)
    about = {"ns": "proj-Counter", "id": "ab" * 32}
    lease = await la.claim("lo-obj", about)
    kept = await la.claim("lo-obj2", {"ns": "proj-Counter", "id": "cd" * 32})
    assert "lo-obj" not in {k for k, _ in await lb.orphans()}  # its owner lives
    assert await la.hand_over(kept, {"ns": "proj-Counter", "id": "cd" * 32})
    await a.close(deregister=False)  # a crash: the registration expires
    deadline = time.monotonic() + 8
    while "lo-obj" not in {k for k, _ in await lb.orphans()}:
        assert time.monotonic() < deadline, "the dead owner's lease was never found orphaned"
        await asyncio.sleep(0.1)
    found = dict(await lb.orphans())
    assert found["lo-obj"]["ns"] == about["ns"] and found["lo-obj"]["id"] == about["id"]
    assert found["lo-obj2"]["node"] == "" and found["lo-obj2"]["id"] == "cd" * 32  # handed over
    taken = await lb.claim("lo-obj", about)
    assert taken.epoch > lease.epoch and await lb.owner("lo-obj") == ("lo-b", taken.epoch)
    assert "lo-obj" not in {k for k, _ in await lb.orphans()}
    assert "lo-b" in await lb.live_nodes() and "lo-a" not in await lb.live_nodes()
    await b.close()


READS = 200


async def test_a_whole_bucket_read_at_any_server_sees_every_node_and_object(nats3) -> None:
    # Each node talks to another of the three servers. A read of a whole bucket ends at the last
    # entry the server sent, not at the watcher's first "no more" marker: asked at a server that
    # leads neither the bucket nor its consumer, that marker came before the entries in 1 or 2
    # reads of 100, and the listing saw no live node (every owner "") or no object. A renewal
    # racing the read could hide its node too, about 1 read in 1,000: such a read is read again.
    import nats

    regs, conns = [], []
    for i, url in enumerate(nats3.urls):
        nc = await nats.connect(url)  # this server only
        conns.append(nc)
        options = LeaseOptions(replicas=nats3.replicas)
        reg = NodeRegistry(nc.jetstream(timeout=5), f"lw-{i}", options)
        await reg.register()
        regs.append((reg, await Leases(reg).open()))
    owned = {}
    for i, (_, leases) in enumerate(regs):
        for j in range(3):
            about = {"ns": "proj-Counter", "id": f"{i}{j}" * 32}
            await leases.claim(f"lw-obj-{i}-{j}", about)
            owned[about["id"]] = f"lw-{i}"
    nodes = sorted(owned.values())
    short = []
    for reg, leases in regs:
        for _ in range(READS):
            live = await leases.live_nodes()
            if not set(nodes) <= set(live):
                short.append((reg.node, "live_nodes", live))
        for _ in range(READS // 4):
            got = {e["id"]: e["node"] for e in await leases.directory() if e["id"] in owned}
            if got != owned:
                short.append((reg.node, "directory", got))
    for reg, _ in regs:
        await reg.close()
    for nc in conns:
        await nc.close()
    assert short == [], f"{len(short)} reads missed entries, first: {short[0]}"


async def test_a_node_that_cannot_renew_stops_writing_before_its_ttl(nats1, connect) -> None:
    a, la = await node(connect, nats1, "ls-a", ttl=2, renew_every=0.5, margin=0.5)
    await la.claim("ls-obj")
    a._task.cancel()  # a hang of its renewals (the event loop goes on)
    t0 = time.monotonic()
    while a.writable():
        await asyncio.sleep(0.01)
    assert time.monotonic() - t0 < 2 - 0.5 + 0.2  # fenced by ttl - margin after its last renewal
    with pytest.raises(SelfFencedError, match="self-fenced") as e:
        await la.claim("ls-other")
    assert e.value.retryable
    # The server still has its registration for a while: nobody else could have taken over yet.
    b, lb = await node(connect, nats1, "ls-b")
    with pytest.raises(LeaseHeldError):
        await lb.claim("ls-obj")
    await b.close()


def test_options_and_keys_are_checked() -> None:
    with pytest.raises(InvalidInputError, match="whole number of seconds"):
        LeaseOptions(ttl=1.5)
    with pytest.raises(InvalidInputError, match="renew_every"):
        LeaseOptions(ttl=2, renew_every=1.8)
    with pytest.raises(InvalidInputError, match="node name 'a.b' is not valid"):
        NodeRegistry(None, "a.b")
    assert len(object_key("Counter:main")) == 26 and object_key("x") == object_key("x")


def claims_total() -> int:
    return int(os.environ.get("DURO_CLUSTER_CLAIMS", "10000"))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_contended_claims_from_real_processes_never_give_an_object_two_live_owners(nats3, tmp_path) -> None:
    """Several processes claim the same 40 objects over and over (releasing some, abandoning all of
    theirs now and then as a crash would): for every object, the intervals in which a process
    treated it as its own never overlap, and its epochs grow with time. DURO_CLUSTER_CLAIMS sets
    the total (10,000 by default: about 25 s here; lower it on a slow machine)."""
    procs = 3
    total = claims_total()
    urls = ",".join(nats3.urls)
    t0 = time.monotonic()
    # Output goes to files: a pipe nobody reads while another child is waited for fills up, and a
    # child blocked writing to it stops renewing (it self-fences: safe, but not what is measured).
    logs = [tmp_path / f"claims{i}.out" for i in range(procs)]
    children = []
    for i in range(procs):
        with open(logs[i], "w") as out:
            children.append(subprocess.Popen([*CHILD, "claims", urls, f"c{i}", str(total // procs), "40", str(i)],
                                             cwd=ROOT, stdout=out, stderr=subprocess.STDOUT))
    try:
        for c in children:
            c.wait(280)
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait(10)
    outs = [path.read_text() for path in logs]
    for c, out in zip(children, outs):
        assert c.returncode == 0, out[-3000:]
    seconds = time.monotonic() - t0
    held = [json.loads(line) for out in outs for line in out.splitlines() if line.startswith("{")]
    held = [h for h in held if h["end"] > h["start"]]  # a lease its node self-fenced before using
    won = sum(int(line.split()[1]) for out in outs for line in out.splitlines() if line.startswith("DONE"))
    by_key: dict[str, list[dict]] = {}
    for h in held:
        by_key.setdefault(h["key"], []).append(h)
    overlaps = []
    for key, hs in by_key.items():
        hs.sort(key=lambda h: h["start"])
        for prev, nxt in zip(hs, hs[1:]):
            if nxt["start"] < prev["end"]:
                overlaps.append((key, prev, nxt))
            assert nxt["epoch"] > prev["epoch"], (key, prev, nxt)
    fenced = sum(int(line.split()[2]) for out in outs for line in out.splitlines() if line.startswith("DONE"))
    print(f"{total} claims from {procs} processes in {seconds:.1f} s: {won} won, {len(held)} leases held, "
          f"{len(by_key)} objects, {len(overlaps)} with two live owners, {fenced} node runs self-fenced")
    assert won == len(held) and won > total // 20  # real contention, every lease accounted for
    assert not overlaps, json.dumps(overlaps[:2], indent=1)


async def test_a_replication_the_servers_cannot_give_is_a_clear_error(connect) -> None:
    from duro.cluster.testing import NatsServers

    with NatsServers(1) as fresh:  # no bucket yet
        nc = await connect(fresh)
        await _refused(nc)


async def _refused(nc) -> None:
    reg = NodeRegistry(nc.jetstream(timeout=5), "lr-a", LeaseOptions(replicas=3))  # one server, asked for 3
    with pytest.raises(DuroError, match="cannot create the key-value bucket 'duro_nodes' .3 replicas.: "
                                        "replicas > 1 not supported in non-clustered mode"):
        await reg.register()
