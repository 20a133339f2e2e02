"""End-to-end: the rate limiter example on a real server."""

import concurrent.futures as cf
import pathlib

import httpx

HERE = pathlib.Path(__file__).parent


def test_each_client_gets_its_own_bucket_even_under_concurrency(serve):
    srv = serve(HERE)

    def hit(client):
        return httpx.get(srv.url + "/api/x", headers={"x-client-id": client}, timeout=30)

    with cf.ThreadPoolExecutor(8) as pool:
        codes = [r.status_code for r in pool.map(hit, ["ana"] * 15)]
    # 10 tokens; refill of 1/s may add one during the burst on a slow machine.
    assert codes.count(200) in (10, 11) and codes.count(429) == 15 - codes.count(200)
    limited = hit("ana")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert hit("bob").status_code == 200
