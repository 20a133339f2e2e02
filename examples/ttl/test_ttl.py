"""End-to-end: the ttl example on a real server and the real clock."""

import pathlib
import time

import httpx

from duro.testing import wait_for

HERE = pathlib.Path(__file__).parent


def _files(data):
    return sorted(p.name for p in (data / "do").rglob("*.sqlite")) if (data / "do").exists() else []


def test_entries_expire_renew_and_leave_no_file(serve, tmp_path):
    data = tmp_path / "d"
    srv = serve(HERE, data=data)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        exp = c.put("/entries/short?ttl=0.5", content="soon gone").json()["expires_at"]
        c.put("/entries/long?ttl=600", content="stays")
        assert c.get("/entries/short").json() == {"value": "soon gone", "expires_at": exp}
        assert len(_files(data)) == 2
        wait_for(lambda: c.get("/entries/short").status_code == 404, timeout=10, what="expiry")
        assert time.time() * 1000 >= exp
        wait_for(lambda: len(_files(data)) == 1, timeout=10, what="the expired entry's file to go")
        assert c.get("/entries/long").json()["value"] == "stays"

        first = c.put("/entries/renewed?ttl=0.8", content="v1").json()["expires_at"]
        time.sleep(0.4)
        second = c.put("/entries/renewed?ttl=1.5", content="v2").json()["expires_at"]
        assert second > first
        time.sleep(max(0.0, first / 1000 - time.time()) + 0.3)  # past the first expiry
        assert c.get("/entries/renewed").json()["value"] == "v2"
        wait_for(lambda: c.get("/entries/renewed").status_code == 404, timeout=10, what="renewed expiry")
        assert c.put("/entries/x?ttl=abc").status_code == 400
        assert c.put("/entries/x?ttl=0").status_code == 400


def test_expiry_during_downtime_is_applied_after_restart(serve, tmp_path):
    data = tmp_path / "d"
    srv = serve(HERE, data=data)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        exp = c.put("/entries/k?ttl=0.5", content="v").json()["expires_at"]
    srv.stop()
    time.sleep(max(0.0, exp / 1000 - time.time()) + 0.2)
    assert len(_files(data)) == 1  # nothing ran while stopped
    srv.start()
    wait_for(lambda: _files(data) == [], timeout=10, what="the expiry to be applied after the restart")
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get("/entries/k").status_code == 404
