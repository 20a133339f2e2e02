"""Fencing and take-over with real owner processes on a real 3-server cluster (R=3, fsync before
every acknowledgement): an owner frozen by SIGSTOP until another node took its object over finds,
once resumed, every append refused by the servers (not by its own clock) and reports a retryable
error, and the stream holds the new owner's chain intact; an owner killed under concurrent appends
loses none it acknowledged, and the time its objects take to move is measured."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time

import pytest

from duro.cluster.journal import JetStreamJournal
from duro.cluster.leases import LeaseHeldError, LeaseOptions, Leases, NodeRegistry

from .child import commit
from .conftest import CHILD, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


class Owner:
    """An owner node as a child process; its stdout lines are collected by a thread."""

    def __init__(self, urls: list[str], node: str, keys: list[str], *extra: str) -> None:
        self.proc = subprocess.Popen([*CHILD, "owner", ",".join(urls), node, ",".join(keys), *extra], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    async def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None and not self._reader.is_alive() and not predicate():
                raise AssertionError(f"owner exited ({self.proc.returncode}) before {what}: "
                                     f"{self.lines[-20:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}: {self.lines[-5:]}")
            await asyncio.sleep(0.01)

    def acked(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for line in list(self.lines):
            if line.startswith("ACK "):
                _, key, seq = line.split()
                out.setdefault(key, []).append(int(seq))
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


async def take_over(connect, servers, node: str, keys: list[str]):
    nc = await connect(servers, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream(timeout=5)
    reg = NodeRegistry(js, node, LeaseOptions(replicas=servers.replicas))
    await reg.register()
    leases = await Leases(reg).open()
    journal = await JetStreamJournal(js, replicas=servers.replicas).open()
    logs, when = {}, {}
    t0 = time.monotonic()
    pending = list(keys)
    while pending:
        for key in list(pending):
            try:
                lease = await leases.claim(key)
            except LeaseHeldError:
                continue
            logs[key] = await journal.take(lease, reg)
            when[key] = time.monotonic()
            pending.remove(key)
        assert time.monotonic() - t0 < 30, f"objects {pending} never moved"
        await asyncio.sleep(0.02)
    return reg, journal, logs, when


async def test_a_resumed_stale_owner_is_refused_by_the_servers(nats3, connect) -> None:
    # The owner runs without its own self-fencing: what stops it is the servers alone.
    a = Owner(nats3.urls, "fs-a", ["fs-obj"], "--no-self-fence")
    try:
        await a.wait_for(lambda: len(a.acked().get("fs-obj", [])) >= 20, 30, "20 acknowledged appends")
        os.kill(a.proc.pid, signal.SIGSTOP)
        frozen_at = len(a.acked()["fs-obj"])
        reg, journal, logs, when = await take_over(connect, nats3, "fs-b", ["fs-obj"])
        b = logs["fs-obj"]
        start = len(b.rebuilt.records)
        for s in range(start + 1, start + 6):
            await asyncio.wait_for(b.append(commit(s)), 20)
        os.kill(a.proc.pid, signal.SIGCONT)
        await a.wait_for(lambda: any(line.startswith("ERR") for line in a.lines), 30, "the stale owner's error")
        err = next(line for line in a.lines if line.startswith("ERR"))
        print(f"stale owner after SIGCONT: {err}")
        assert err.startswith("ERR fs-obj FencedError retryable=True"), err
        # Every commit the old owner had acknowledged is in what the new owner rebuilt; nothing of
        # the old owner's came after the new owner's epoch record; the chain verifies.
        acked = a.acked()["fs-obj"]
        assert len(acked) >= frozen_at
        rebuilt = [r.capture().seq for r in b.rebuilt.records]
        assert rebuilt[:len(acked)] == acked
        got, last, _ = await journal.rebuild("fs-obj")
        seqs = [r.capture().seq for r in got.records]
        assert seqs == rebuilt + list(range(start + 1, start + 6))
        assert {r.prev for r in got.records[len(rebuilt):]} == {b.lease.epoch}  # B's fencing token on B's records
        assert got.epochs[-1] == b.lease.epoch
        await reg.close()
    finally:
        a.stop()


async def test_a_killed_owner_loses_no_acknowledged_append(nats3, connect) -> None:
    keys = [f"fk-{i}" for i in range(6)]
    a = Owner(nats3.urls, "fk-a", keys)
    try:
        await a.wait_for(lambda: all(len(a.acked().get(k, [])) >= 10 for k in keys), 30, "appends on every object")
        a.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        a.proc.wait(10)
        a._reader.join(10)
        acked = a.acked()
        reg, journal, logs, when = await take_over(connect, nats3, "fk-b", keys)
        moved = sorted(when[k] - killed for k in keys)
        print(f"takeover after SIGKILL of the owner (lease ttl 3 s), {len(keys)} objects: "
              f"first {moved[0]:.2f} s, last {moved[-1]:.2f} s; acknowledged appends: "
              f"{sum(map(len, acked.values()))}")
        for k in keys:
            rebuilt = [r.capture().seq for r in logs[k].rebuilt.records]
            assert rebuilt[:len(acked[k])] == acked[k], k  # every acknowledged append is there, in order
            assert len(rebuilt) - len(acked[k]) <= 1  # at most the one in flight landed unacknowledged
            await asyncio.wait_for(logs[k].append(commit(len(rebuilt) + 1)), 20)
        assert moved[-1] < 3 + 3  # one lease TTL, plus the claim loop and a loaded machine
        await reg.close()
    finally:
        a.stop()
