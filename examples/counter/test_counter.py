"""End-to-end: the counter example on a real server."""

import concurrent.futures as cf
import pathlib

import httpx

HERE = pathlib.Path(__file__).parent


def test_counts_concurrently_without_losing_increments(serve):
    srv = serve(HERE)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.post("/counters/apples").json() == {"name": "apples", "value": 1}
        assert c.post("/counters/apples?by=5").json()["value"] == 6
        with cf.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda _: httpx.post(srv.url + "/counters/apples", timeout=30).raise_for_status(), range(100)))
        assert c.get("/counters/apples").json()["value"] == 106
        assert c.get("/counters/pears").json()["value"] == 0
        assert c.post("/counters/apples?by=x").status_code == 400


def test_value_survives_restart_and_delete_leaves_no_file(serve, tmp_path):
    data = tmp_path / "d"
    srv = serve(HERE, data=data)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        c.post("/counters/kept?by=41")
        c.post("/counters/gone")
    srv.restart()
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.post("/counters/kept").json()["value"] == 42
        assert c.get("/counters/gone").json()["value"] == 1
        files_before = sorted(p.name for p in data.rglob("*.sqlite"))
        assert len(files_before) == 2
        assert c.delete("/counters/gone").status_code == 204
    srv.stop()
    assert len(sorted(p.name for p in data.rglob("*.sqlite"))) == 1
