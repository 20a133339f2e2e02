"""A cluster node as a real child process, for the tests in this folder (``python -m
tests.cluster.child MODE URLS ...``). It prints one line per fact the test checks, flushed at once:

- ``claims NODE N KEYS SEED``: N contended claims over KEYS objects; one JSON line per lease it
  held: key, node, incarnation, epoch, and the monotonic times it started and stopped treating the
  object as its own (CLOCK_MONOTONIC is one clock for every process of the machine).
- ``owner NODE KEY,KEY.. [--no-self-fence]``: claim and take over each object, then append commits to
  all of them at once, printing ``ACK key seq`` for each acknowledged one, until an append fails:
  ``ERR key ErrorType retryable=bool message``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time

import nats

from duro.cluster.journal import JetStreamJournal
from duro.cluster.leases import ClusterUnavailableError, LeaseHeldError, LeaseOptions, Leases, NodeRegistry, SelfFencedError
from duro.storage.journalfile import Capture


def page(fill: int) -> bytes:
    b = bytearray(4096)
    b[0] = 13
    b[5:7] = (4000).to_bytes(2, "big")
    b[4000:] = bytes([fill % 256]) * 96
    return bytes(b)


def commit(seq: int) -> Capture:
    return Capture(seq, 1_700_000_000_000 + seq, seq, 2, {2: page(seq)}, seq.to_bytes(16, "little"))


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def connect(urls: str):
    return await nats.connect(urls.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2,
                              ping_interval=1, max_outstanding_pings=2, connect_timeout=2)


async def claims(urls: str, node: str, n: int, keys: int, seed: int, replicas: int) -> None:
    nc = await connect(urls)
    js = nc.jetstream(timeout=5)
    rnd = random.Random(seed)
    options = LeaseOptions(ttl=2, renew_every=0.5, margin=0.5, replicas=replicas)
    run = 0
    reg = NodeRegistry(js, f"{node}-r{run}", options)
    await reg.register()
    leases = await Leases(reg).open()
    held: list[tuple[object, float]] = []
    won = 0
    fenced = 0  # runs of this node that self-fenced

    def done(lease, start: float, end: float) -> None:
        end = min(end, reg.valid_until)  # a node that self-fenced stopped treating it as its own then
        say(json.dumps({"key": lease.key, "node": lease.node, "inc": reg.incarnation, "epoch": lease.epoch,
                        "start": start, "end": end}))

    for i in range(n):
        key = f"k{rnd.randrange(keys)}"
        try:
            lease = await leases.claim(key)
        except (LeaseHeldError, SelfFencedError, ClusterUnavailableError):
            continue
        start = time.monotonic()  # from here on this process treats the object as its own
        if any(h.key == key for h, _ in held):
            continue  # already ours
        won += 1
        held.append((lease, start))
        if len(held) > 3 or rnd.random() < 0.3:
            old, s = held.pop(0)
            done(old, s, time.monotonic())  # before the release is sent
            with contextlib.suppress(ClusterUnavailableError):
                await leases.release(old)
        if i and i % 700 == 0:
            # A crash of this node's run: its leases are abandoned, not released; other nodes take
            # them over only once the server expired the old registration.
            end = time.monotonic()
            for old, s in held:
                done(old, s, end)
            held.clear()
            fenced += 0 if reg.writable() else 1
            await reg.close(deregister=False)
            run += 1
            reg = NodeRegistry(js, f"{node}-r{run}", options)
            await reg.register()
            leases = Leases(reg)
            await leases.open()
    end = time.monotonic()
    for old, s in held:
        done(old, s, end)
        with contextlib.suppress(ClusterUnavailableError):
            await leases.release(old)
    say(f"DONE {won} {fenced + (0 if reg.writable() else 1)}")
    await reg.close()
    await nc.close()


async def owner(urls: str, node: str, keys: list[str], self_fence: bool, replicas: int) -> None:
    nc = await connect(urls)
    js = nc.jetstream(timeout=5)
    reg = NodeRegistry(js, node, LeaseOptions(ttl=3, renew_every=0.5, margin=0.5, replicas=replicas))
    await reg.register()
    leases = await Leases(reg).open()
    journal = await JetStreamJournal(js, replicas=replicas, timeout=2.0).open()
    logs = {}
    for key in keys:
        logs[key] = await journal.take(await leases.claim(key), reg if self_fence else None)
    say("READY")

    async def write(key: str) -> None:
        seq = len(logs[key].rebuilt.records)
        while True:
            seq += 1
            try:
                await logs[key].append(commit(seq))
            except Exception as e:
                say(f"ERR {key} {type(e).__name__} retryable={getattr(e, 'retryable', False)} {e}")
                return
            say(f"ACK {key} {seq}")
            await asyncio.sleep(0.005)

    await asyncio.gather(*(write(k) for k in keys))
    say("STOPPED")
    await reg.close(deregister=False)
    await nc.close()


def main() -> None:
    mode, urls, *rest = sys.argv[1:]
    replicas = 3 if len(urls.split(",")) >= 3 else 1
    if mode == "claims":
        node, n, keys, seed = rest
        asyncio.run(claims(urls, node, int(n), int(keys), int(seed), replicas))
    elif mode == "owner":
        asyncio.run(owner(urls, rest[0], rest[1].split(","), "--no-self-fence" not in rest, replicas))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
