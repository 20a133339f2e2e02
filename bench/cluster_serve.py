"""``duro serve --cluster`` on this machine: real nats-servers (3, R=3, ``sync_interval: always``) and
real duro node processes, driven over HTTP with the test project of ``tests/cluster``.

1. Durable increments, one client at a time and 8 at once, p50/p99 and per second: the embedded
   default (no ``--cluster``), a cluster node that owns the object, and a node that forwards to the
   owner over NATS, in the same run.
2. Take-over after SIGKILL of the owner, ``--kills`` times (default 5; the issue's 20 is
   ``--kills 20``): from the kill to the first acknowledged increment through another node.

Run: ``.venv/bin/python bench/cluster_serve.py [--kills N] [--adds N]`` (needs the test extra).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import pathlib
import statistics
import sys
import tempfile
import time

import httpx

from duro.cluster.testing import NatsServers
from duro.testing import ServerProcess

PROJECT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "cluster" / "projects" / "counter"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def adds(url: str, name: str, n: int, clients: int) -> tuple[list[float], float]:
    def one(k: int) -> list[float]:
        out = []
        with httpx.Client(base_url=url, timeout=30) as c:
            for _ in range(n // clients):
                t = time.perf_counter()
                r = c.get(f"/add/{name}{k % clients if clients > 1 else ''}")
                out.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
        return out

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        lat = [x for chunk in pool.map(one, range(clients)) for x in chunk]
    return lat, len(lat) / (time.perf_counter() - started)


def report(what: str, lat: list[float], rate: float) -> None:
    print(f"  {what:<44} p50 {pct(lat, 50) * 1000:6.2f} ms  p99 {pct(lat, 99) * 1000:6.2f} ms  {rate:7.0f}/s")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--adds", type=int, default=400)
    args = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="duro-cluster-bench-"))
    started: list[ServerProcess] = []

    def node(name: str, urls: list[str] | None) -> ServerProcess:
        extra = ["--cluster", ",".join(urls), "--node", name] if urls else []
        p = ServerProcess(PROJECT, tmp / f"data-{name}", log_path=tmp / f"{name}.log",
                          env={"DURO_TEST_NODE": name}, args=[*extra, "--no-admin"])
        started.append(p)
        return p.start()

    try:
        with NatsServers(3) as nats:
            embedded = node("embedded", None)
            a, b = node("b-a", nats.urls), node("b-b", nats.urls)
            httpx.get(f"{a.url}/add/warm", timeout=30)
            for k in range(8):
                httpx.get(f"{a.url}/add/warm{k}", timeout=30)  # owned by a
            print(f"durable increments ({args.adds} per row; 3 nats-servers R=3 with fsync; all on this machine):")
            for clients in (1, 8):
                report(f"embedded, {clients} client(s)", *adds(embedded.url, "warm", args.adds, clients))
                report(f"cluster, on the owner, {clients} client(s)", *adds(a.url, "warm", args.adds, clients))
                report(f"cluster, forwarded over NATS, {clients} client(s)", *adds(b.url, "warm", args.adds, clients))
            embedded.stop()
            a.stop()
            b.stop()
            takeovers = []
            survivor = node("b-s", nats.urls)
            for i in range(args.kills):
                owner = node(f"b-k{i}", nats.urls)
                name = f"kill{i}"
                r = httpx.get(f"{owner.url}/add/{name}", timeout=30)
                assert r.json()["node"] == f"b-k{i}", r.text
                killed = time.monotonic()
                owner.kill()
                while True:
                    r = httpx.get(f"{survivor.url}/add/{name}", timeout=30)
                    if r.status_code == 200:
                        break
                takeovers.append(time.monotonic() - killed)
                assert r.json()["stored"] == 2, r.text
            print(f"take-over after SIGKILL of the owner (lease ttl 3 s), {args.kills} kills: "
                  f"p50 {statistics.median(takeovers):.2f} s, p99 {pct(takeovers, 99):.2f} s, "
                  f"max {max(takeovers):.2f} s")
    finally:
        for p in started:
            p.stop(timeout=20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
