"""SIGKILL and alarms: an acknowledged alarm survives a kill and fires after the restart, and a
handler killed half-way runs again (the row is cleared only after a handler succeeds)."""

import concurrent.futures as cf
import pathlib
import time

import httpx

from duro.testing import ServerProcess, wait_for

PROJECT = pathlib.Path(__file__).resolve().parents[1] / "e2e" / "projects" / "alarms"


def test_acknowledged_alarms_survive_sigkill_and_fire_after_restart(tmp_path):
    data = tmp_path / "data"
    srv = ServerProcess(PROJECT, data, log_path=tmp_path / "s0.log").start()
    names = [f"k{i}" for i in range(40)]
    with cf.ThreadPoolExecutor(8) as pool:
        armed = dict(zip(names, pool.map(
            lambda n: httpx.post(f"{srv.url}/arm/{n}?in=1500", timeout=30).json()["alarm"], names)))
    srv.kill()  # right after the acknowledgements, before anything is due
    time.sleep(max(0.0, max(armed.values()) / 1000 - time.time()) + 0.3)
    srv = ServerProcess(PROJECT, data, port=srv.port, log_path=tmp_path / "s1.log").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for n in names:
                st = wait_for(lambda: (s := c.get(f"/state/{n}").json())["fired"] and s, timeout=20,
                              what=f"alarm of {n}")
                assert st["fired"] == [armed[n]] and st["alarm"] is None
    finally:
        srv.stop()


def test_a_handler_killed_half_way_runs_again(tmp_path):
    data = tmp_path / "data"
    srv = ServerProcess(PROJECT, data, log_path=tmp_path / "s0.log").start()
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        when = c.post("/arm/halfway?in=100&sleep=1.5").json()["alarm"]
        # alarm() has started (its first write is committed) and is now sleeping.
        wait_for(lambda: c.get("/state/halfway").json()["started"] == 1, timeout=10, what="alarm() to start")
    srv.kill()
    srv = ServerProcess(PROJECT, data, port=srv.port, log_path=tmp_path / "s1.log").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            st = wait_for(lambda: (s := c.get("/state/halfway").json())["fired"] and s, timeout=20,
                          what="the interrupted alarm to run again")
            assert st["started"] == 2 and st["fired"] == [when] and st["alarm"] is None
    finally:
        srv.stop()
