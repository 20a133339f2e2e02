"""Cut the power under a running server: every write it acknowledged is there when it comes back.

The server runs on the power-cut filesystem (tests/powercut/lazyfs.py, a real FUSE mount). While
client threads stream increments — each to its own counter, which is a new object each round (a
new file, and the first object of a new namespace directory in round one), and to one shared hot
counter — the power is cut: every change not yet fsync'd is undone, newest first, and the server is
killed. A new server then starts on what the disk kept. For each client counter: acknowledged <=
final <= acknowledged + 1 (one request may have been in flight); the hot counter is at least the
highest value any client was told.

``DURO_FAULT_ROUNDS`` sets the number of cuts (default 2; CI runs the default, the full run 10).
"""

from __future__ import annotations

import os
import pathlib
import random
import threading
import time

import httpx
import pytest

from duro.testing import ServerProcess

pytestmark = pytest.mark.powercut

COUNTER = pathlib.Path(__file__).resolve().parents[2] / "examples" / "counter"
ROUNDS = int(os.environ.get("DURO_FAULT_ROUNDS", "2"))
CLIENTS = 8


def _hammer(url, name, acked, stop):
    with httpx.Client(base_url=url, timeout=10) as c:
        while not stop.is_set():
            target = name if random.random() < 0.5 else "hot"
            try:
                r = c.post(f"/counters/{target}")
            except httpx.HTTPError:
                return  # the server died mid-request: this one was not acknowledged
            if r.status_code != 200:
                return  # after the cut the disk fails: refused, not acknowledged
            acked.append((target, r.json()["value"]))


def _check(url, round_, acks) -> None:
    with httpx.Client(base_url=url, timeout=10) as c:
        for i, a in acks.items():
            own = [v for t, v in a if t != "hot"]
            final = c.get(f"/counters/r{round_}-c{i}").json()["value"]
            assert len(own) <= final <= len(own) + 1, (round_, i, len(own), final)
            if own:
                assert max(own) == len(own)
        hot_acked = [v for a in acks.values() for t, v in a if t == "hot"]
        if hot_acked:
            assert c.get("/counters/hot").json()["value"] >= max(hot_acked)
            assert len(set(hot_acked)) == len(hot_acked)


def test_acknowledged_writes_survive_power_loss(powercut, tmp_path):
    lost_total = 0
    acked_total = 0
    for round_ in range(ROUNDS):
        data = powercut.mount / "data"
        srv = ServerProcess(COUNTER, data, log_path=tmp_path / f"server{round_}.log").start()
        stop = threading.Event()
        acks = {i: [] for i in range(CLIENTS)}
        threads = [threading.Thread(target=_hammer, args=(srv.url, f"r{round_}-c{i}", acks[i], stop))
                   for i in range(CLIENTS)]
        for t in threads:
            t.start()
        try:
            target = random.randint(100, 400)
            deadline = time.monotonic() + 30
            while sum(len(a) for a in acks.values()) < target and time.monotonic() < deadline:
                time.sleep(0.01)
            lost_total += powercut.cut()  # the power goes: unsynced changes are undone, the disk fails
        finally:
            srv.kill()
            stop.set()
            for t in threads:
                t.join(15)
        acked = sum(len(a) for a in acks.values())
        acked_total += acked
        assert acked >= 50, f"too few acknowledged writes before the cut: {acked}"

        # The power comes back: a server on what the disk kept.
        back = ServerProcess(COUNTER, powercut.backing / "data", log_path=tmp_path / f"after{round_}.log").start()
        try:
            _check(back.url, round_, acks)
        finally:
            back.stop()
        if round_ + 1 < ROUNDS:
            powercut.remount()
    assert lost_total > 0, "no unsynced change was ever lost: the cut did not test anything"
