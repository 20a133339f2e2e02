"""Alarms on the real server with real time: short alarms fire, each once, and an alarm that comes
due while the server is stopped fires shortly after it starts again."""

import pathlib
import time

import httpx

from duro.testing import wait_for

PROJECT = pathlib.Path(__file__).parent / "projects" / "alarms"


def _state(c, name):
    return c.get(f"/state/{name}").json()


def test_short_alarms_fire_once_on_the_real_clock(serve):
    srv = serve(PROJECT)
    names = [f"t{i}" for i in range(5)]
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        armed = {n: c.post(f"/arm/{n}?in={200 + 50 * i}").json()["alarm"] for i, n in enumerate(names)}
        for n in names:
            # Still pending, or (on a slow machine, past its 200 ms) already fired at that time.
            st = _state(c, n)
            assert (st["alarm"], st["fired"]) in ((armed[n], []), (None, [armed[n]])), st
        for n in names:
            st = wait_for(lambda: (s := _state(c, n))["fired"] and s, timeout=10, what=f"alarm of {n}")
            assert st["fired"] == [armed[n]] and st["alarm"] is None
        time.sleep(0.5)
        assert all(_state(c, n)["fired"] == [armed[n]] for n in names)  # exactly once
        assert time.time() * 1000 >= max(armed.values())


def test_alarm_due_while_stopped_fires_after_start(serve, tmp_path):
    srv = serve(PROJECT, data=tmp_path / "d")
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        when = c.post("/arm/late?in=1000").json()["alarm"]
    srv.stop()
    time.sleep(max(0.0, when / 1000 - time.time()) + 0.2)  # due while nothing runs
    srv.start()
    started = time.monotonic()
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        st = wait_for(lambda: (s := _state(c, "late"))["fired"] and s, timeout=10, what="the late alarm")
    assert st["fired"] == [when]
    assert time.monotonic() - started < 5
