"""SIGKILL and schedules: schedules acknowledged before a kill are kept, and fire after the restart
with the catch-up policy each asked for (the server was down past their times)."""

import pathlib
import time

import httpx

from duro.testing import ServerProcess, wait_for

PROJECT = pathlib.Path(__file__).resolve().parents[1] / "e2e" / "projects" / "schedules"


def test_acknowledged_schedules_survive_sigkill_and_catch_up_by_policy(tmp_path):
    data = tmp_path / "data"
    srv = ServerProcess(PROJECT, data, log_path=tmp_path / "s0.log").start()
    names = [f"p{i}" for i in range(5)]
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        plans = {n: c.post(f"/plan/{n}?in=3000&missed_after=0.5").json() for n in names}
    srv.kill()  # right after the acknowledgements, before anything is due (3 s ahead)
    # Down until every time is more than missed_after late.
    due = max(p["once"] for p in plans.values())
    time.sleep(max(0.0, due / 1000 - time.time()) + 1.5)
    srv = ServerProcess(PROJECT, data, port=srv.port, log_path=tmp_path / "s1.log").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for n in names:
                st = wait_for(lambda: (s := c.get(f"/state/{n}").json())["schedules"] == ["later"] and s,
                              timeout=20, what=f"the schedules of {n}")
                p = plans[n]
                # once: called once, told it was missed; all: called for its one time; skip: not
                # called, and gone; the later schedule and the object's own alarm (an hour away,
                # sharing the alarm row with the schedules) stay.
                assert sorted(st["calls"]) == sorted([["once", p["once"], 1], ["all", p["all"], 1]])
                assert st["alarm"] == p["alarm"]
    finally:
        srv.stop()


def test_a_schedule_killed_half_way_runs_again(tmp_path):
    data = tmp_path / "data"
    srv = ServerProcess(PROJECT, data, log_path=tmp_path / "s0.log").start()
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        when = c.post("/slow/halfway?in=100&sleep=1.5").json()["time"]
        # The method has started (its first write is committed) and is now sleeping.
        wait_for(lambda: c.get("/state/halfway").json()["started"] == 1, timeout=10, what="the method to start")
    srv.kill()
    srv = ServerProcess(PROJECT, data, port=srv.port, log_path=tmp_path / "s1.log").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            st = wait_for(lambda: (s := c.get("/state/halfway").json())["calls"] and s, timeout=20,
                          what="the interrupted call to run again")
            # Called again, for the same time (less than missed_after late: not counted as missed).
            assert st["started"] == 2 and st["calls"] == [["slow", when, 0]] and st["schedules"] == []
    finally:
        srv.stop()
