"""A full disk: writes are refused with an error that says so, reads of every object keep working
(open ones and ones that have to be opened again), nothing acknowledged is lost, and once there is
room again writes go on. The server runs on the power-cut filesystem (tests/powercut/lazyfs.py),
told to behave as a full disk: a write that needs a new block fails with ENOSPC."""

from __future__ import annotations

import pathlib
import time

import httpx
import pytest

from duro.testing import ServerProcess

pytestmark = pytest.mark.powercut

PROJECT = pathlib.Path(__file__).resolve().parent / "project"


def test_a_full_disk_refuses_writes_and_every_object_stays_readable(powercut, tmp_path):
    srv = ServerProcess(PROJECT, powercut.mount / "data", log_path=tmp_path / "server.log").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=20) as c:
            for i in range(12):
                for _ in range(3):
                    assert c.post(f"/w/o{i}").status_code == 200
            # Half of them are evicted (idle_timeout = 1 s in the project): they must open again.
            for i in range(6, 12):
                assert c.post(f"/w/o{i}").status_code == 200
            time.sleep(3)
            for i in range(6):
                assert c.get(f"/r/o{i}").json()["value"] == 3
            powercut.fill()
            refused = c.post("/w/o0")
            assert refused.status_code >= 500, refused.text
            assert "No space left on device" in refused.text or "disk is full" in refused.text, refused.text
            new = c.post("/w/a-new-object")
            assert new.status_code >= 500, new.text
            # Every object still reads, as of its last acknowledged write.
            for i in range(12):
                got = c.get(f"/r/o{i}")
                assert got.status_code == 200, (i, got.text)
                assert got.json()["value"] == (3 if i < 6 else 4), (i, got.text)
            # Room again: writes go on from the last acknowledged state.
            powercut.make_room()
            ok = c.post("/w/o0")
            assert ok.status_code == 200, ok.text
            assert ok.json()["value"] == 4
            assert c.post("/w/a-new-object").json()["value"] == 1
    finally:
        srv.kill()
    assert "Traceback" not in srv.log() or "No space left" in srv.log()
