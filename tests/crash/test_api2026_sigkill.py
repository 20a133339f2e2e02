"""SIGKILL and the 2026 API on the real server (fsync durability, the node journal): a facet's
acknowledged writes and a fork (an object restored from another's snapshot) survive a kill."""

import pathlib

import httpx

from duro.testing import ServerProcess

PROJECT = pathlib.Path(__file__).resolve().parents[1] / "integration" / "projects" / "api2026"


def test_facet_writes_and_a_fork_survive_sigkill(tmp_path):
    data = tmp_path / "data"
    srv = ServerProcess(PROJECT, data, log_path=tmp_path / "s0.log").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for i in range(20):
                assert c.post(f"/facet/p{i % 3}/f{i % 2}?body=n{i}").text == "ok"
            assert c.post("/notes/template?body=first").text == "ok"
            assert c.post("/notes/template?body=second").text == "ok"
            assert c.post("/notes/copy?body=replaced").text == "ok"
            assert c.post("/fork/template/copy").json() == ["first", "second"]
    finally:
        srv.kill()  # right after the acknowledgements
    srv = ServerProcess(PROJECT, data, port=srv.port, log_path=tmp_path / "s1.log").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for p in range(3):
                for f in range(2):
                    want = [f"n{i}" for i in range(20) if i % 3 == p and i % 2 == f]
                    assert c.get(f"/facet/p{p}/f{f}").json() == want
            assert c.get("/notes/copy").json() == ["first", "second"]
            assert c.get("/notes/template").json() == ["first", "second"]
    finally:
        srv.stop()
