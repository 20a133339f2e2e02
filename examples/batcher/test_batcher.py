"""End-to-end: the batcher example on a real server and the real clock."""

import concurrent.futures as cf
import pathlib
import time

import httpx

from duro.testing import wait_for

HERE = pathlib.Path(__file__).parent


def test_concurrent_requests_are_flushed_as_one_batch(serve):
    srv = serve(HERE)
    started = time.monotonic()
    with cf.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda i: httpx.post(f"{srv.url}/batches/logs", content=f"item{i}", timeout=30).status_code,
                              range(20)))
    assert codes == [202] * 20
    quick = time.monotonic() - started < 0.4  # all queued before the flush (FLUSH_AFTER_MS = 500)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        st = c.get("/batches/logs").json()
        assert st["flush_at"] is not None and st["pending"] + sum(len(b["items"]) for b in st["batches"]) == 20
        st = wait_for(lambda: (s := c.get("/batches/logs").json())["pending"] == 0 and s, timeout=10,
                      what="the flush")
        flushed = [item for b in st["batches"] for item in b["items"]]
        assert sorted(flushed) == sorted(f"item{i}" for i in range(20))  # each exactly once
        assert len(st["batches"]) == 1 or not quick
        assert st["flush_at"] is None
        assert c.post("/batches/logs", content="late").json() == {"pending": 1}
        n = len(st["batches"])
        st = wait_for(lambda: len((s := c.get("/batches/logs").json())["batches"]) == n + 1 and s, timeout=10,
                      what="the second flush")
        assert st["batches"][-1]["items"] == ["late"]
        assert c.get("/batches/other").json() == {"pending": 0, "flush_at": None, "batches": []}
