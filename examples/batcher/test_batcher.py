"""End-to-end: the batcher example on a real server and the real clock."""

import concurrent.futures as cf
import pathlib

import httpx

from duro.testing import wait_for

HERE = pathlib.Path(__file__).parent


def test_concurrent_requests_are_flushed_as_one_batch(serve):
    srv = serve(HERE)
    with cf.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: httpx.post(f"{srv.url}/batches/logs", content=f"item{i}", timeout=30),
                                range(20)))
    assert [a.status_code for a in answers] == [202] * 20
    together = max(a.json()["pending"] for a in answers)  # items seen queued at one moment
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        st = c.get("/batches/logs").json()
        assert st["pending"] + sum(len(b["items"]) for b in st["batches"]) == 20
        # Never an item queued without a flush due (on a loaded machine the flush may be done already).
        assert st["flush_at"] is not None or st["pending"] == 0, st
        st = wait_for(lambda: (s := c.get("/batches/logs").json())["pending"] == 0 and s, timeout=10,
                      what="the flush")
        flushed = [item for b in st["batches"] for item in b["items"]]
        assert sorted(flushed) == sorted(f"item{i}" for i in range(20))  # each exactly once
        # A flush takes everything queued: the items that were queued together left in one batch
        # (all 20 in one when they were all queued before the flush was due).
        assert max(len(b["items"]) for b in st["batches"]) >= together
        assert st["flush_at"] is None
        assert c.post("/batches/logs", content="late").json() == {"pending": 1}
        n = len(st["batches"])
        st = wait_for(lambda: len((s := c.get("/batches/logs").json())["batches"]) == n + 1 and s, timeout=10,
                      what="the second flush")
        assert st["batches"][-1]["items"] == ["late"]
        assert c.get("/batches/other").json() == {"pending": 0, "flush_at": None, "batches": []}
