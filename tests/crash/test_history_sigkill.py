"""SIGKILL and point-in-time recovery: after a kill in the middle of a stream of writes, every
bookmark an acknowledged request returned still restores to exactly the state it named, and the
history holds the database's current state (what was in the WAL but not in the history is healed)."""

import pathlib
import threading
import time

import httpx

from duro.storage import ObjectDatabase
from duro.storage import history as H
from duro.testing import ServerProcess

PROJECT = pathlib.Path(__file__).resolve().parents[1] / "e2e" / "projects" / "recovery"


def _hammer(url, name, acked, stop):
    with httpx.Client(base_url=url, timeout=10) as c:
        while not stop.is_set():
            try:
                r = c.post(f"/inc/{name}")
            except httpx.HTTPError:
                return  # the server died mid-request: not acknowledged
            if r.status_code == 200:
                acked.append(r.json())


def _n(path):
    db = ObjectDatabase(path)
    try:
        n = db.kv_get("n")
        rows = db.port.run_internal("SELECT count(*), coalesce(max(n), 0) FROM log")[0]
        return n, tuple(rows)
    finally:
        db.close()


def test_acknowledged_bookmarks_survive_sigkill(tmp_path):
    data = tmp_path / "data"
    srv = ServerProcess(PROJECT, data, log_path=tmp_path / "server.log").start()
    stop = threading.Event()
    acks = {i: [] for i in range(6)}
    threads = [threading.Thread(target=_hammer, args=(srv.url, f"c{i}", acks[i], stop)) for i in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while sum(len(a) for a in acks.values()) < 600 and time.monotonic() < deadline:
        time.sleep(0.05)
    srv.kill()  # SIGKILL while writes (and history appends) are streaming
    stop.set()
    for t in threads:
        t.join(10)
    assert sum(len(a) for a in acks.values()) >= 100

    folder = data / "do" / "recovery-e2e-Counter"
    out = tmp_path / "out.sqlite"
    for i, acked in acks.items():
        if not acked:
            continue
        path = folder / f"{acked[0]['id']}.sqlite"
        final = _n(path)
        assert final[0] >= acked[-1]["n"] and final[1] == (final[0], final[0])
        current = H.current_bookmark(path)  # heals what the kill left
        H.materialize(path, current, out)
        assert _n(out) == final  # the history holds the current state
        for ack in (acked[0], acked[len(acked) // 2], acked[-1]):
            H.materialize(path, ack["bookmark"], out)
            assert _n(out) == (ack["n"], (ack["n"], ack["n"]))
        H.restore(path, acked[len(acked) // 2]["bookmark"])
        assert _n(path)[0] == acked[len(acked) // 2]["n"]
        H.restore(path, current)
        assert _n(path) == final
