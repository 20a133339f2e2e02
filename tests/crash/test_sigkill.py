"""SIGKILL the server in the middle of a stream of concurrent increments; after a restart every
increment that was acknowledged is present.

Each client thread owns one counter, so for it: acknowledged <= final <= acknowledged + 1 (the one
request that may have been in flight when the process died). A shared hot counter is hit by every
thread too: its final value is at least the highest value any client was told.
"""

import pathlib
import random
import threading
import time

import httpx

from duro.testing import ServerProcess

COUNTER = pathlib.Path(__file__).resolve().parents[2] / "examples" / "counter"


def _hammer(url, name, acked, stop, errors):
    with httpx.Client(base_url=url, timeout=10) as c:
        while not stop.is_set():
            try:
                target = name if random.random() < 0.5 else "hot"
                r = c.post(f"/counters/{target}")
                if r.status_code == 200:
                    acked.append((target, r.json()["value"]))
                else:
                    errors.append(r.status_code)
            except httpx.HTTPError:
                return  # the server died mid-request: this one was not acknowledged


def test_acknowledged_increments_survive_sigkill(tmp_path):
    data = tmp_path / "data"
    for round_ in range(2):
        srv = ServerProcess(COUNTER, data, log_path=tmp_path / f"server{round_}.log").start()
        stop = threading.Event()
        acks = {i: [] for i in range(12)}
        errors = []
        threads = [threading.Thread(target=_hammer, args=(srv.url, f"c{round_}-{i}", acks[i], stop, errors))
                   for i in range(12)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while sum(len(a) for a in acks.values()) < 1500 and time.monotonic() < deadline:
            time.sleep(0.05)
        srv.kill()  # SIGKILL while writes are streaming
        stop.set()
        for t in threads:
            t.join(10)
        assert not errors, errors
        total = sum(len(a) for a in acks.values())
        assert total >= 300, f"too few acknowledged writes before the kill: {total}"

        srv = ServerProcess(COUNTER, data, log_path=tmp_path / f"after{round_}.log").start()
        try:
            with httpx.Client(base_url=srv.url, timeout=10) as c:
                for i, a in acks.items():
                    own = [v for t, v in a if t != "hot"]
                    final = c.get(f"/counters/c{round_}-{i}").json()["value"]
                    assert len(own) <= final <= len(own) + 1, (i, len(own), final)
                    if own:
                        assert max(own) == len(own)  # each client saw its own counter go 1, 2, 3 ...
                hot_acked = [v for a in acks.values() for t, v in a if t == "hot"]
                hot = c.get("/counters/hot").json()["value"]
                assert hot >= max(hot_acked)
                assert len(set(hot_acked)) == len(hot_acked)  # no two clients were told the same value
        finally:
            srv.stop()
