"""``duro serve --cluster`` on this machine: real nats-servers (3, R=3, ``sync_interval: always``) and
real duro node processes, driven over HTTP with the test project of ``tests/cluster``.

1. Durable increments, 1 client and 8 at once (8 objects), p50/p99 and per second, in one run:
   the embedded default (no ``--cluster``), a 1-node cluster (the node owns every object), and a
   3-node cluster (the objects' owners spread over the 3 nodes, each client sending to one node, as a
   load balancer would: 6 of the 8 clients send to a node that forwards to the owner over NATS);
   also one client through a node that forwards every call.
   With wrk installed (``apt-get install wrk``), the same three set-ups under 16 connections for
   ``--wrk-seconds`` (default 5) each, 16 objects (on 3 nodes: one wrk per node, 6 connections
   each, every object's owner spread): the rate the server sustains, not one client's.
2. What a request costs the NATS side: journal messages (appends) per request, from the stream's
   message count before and after, and fsync/fdatasync calls of the 3 nats-server processes per
   request (``strace -c -f`` attached to them; skipped when strace is missing or not permitted), for
   a fixed number of increments, 1 client and 8.
3. Take-over after SIGKILL of the owner, ``--kills`` times (default 20): from the kill to the first
   acknowledged increment through another node; p50/p99/max.

Run: ``.venv/bin/python bench/cluster_serve.py [--kills N] [--adds N]`` (needs the test extra;
about 3 minutes with the defaults on a 2-core machine). Runs one thing at a time.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

from duro.cluster.journal import STREAM
from duro.cluster.testing import NatsServers
from duro.testing import ServerProcess

PROJECT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "cluster" / "projects" / "counter"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def adds(targets: list[tuple[str, str]], n: int, clients: int) -> tuple[list[float], float]:
    """``n`` increments by ``clients`` clients, client k sending to ``targets[k % len]`` (url, name)
    one request after the other; their latencies and the rate."""
    def one(k: int) -> list[float]:
        url, name = targets[k % len(targets)]
        out = []
        with httpx.Client(base_url=url, timeout=30) as c:
            for _ in range(n // clients):
                t = time.perf_counter()
                r = c.get(f"/add/{name}")
                out.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
        return out

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        lat = [x for chunk in pool.map(one, range(clients)) for x in chunk]
    return lat, len(lat) / (time.perf_counter() - started)


def report(what: str, lat: list[float], rate: float) -> None:
    print(f"  {what:<52} p50 {pct(lat, 50) * 1000:6.2f} ms  p99 {pct(lat, 99) * 1000:6.2f} ms  {rate:7.0f}/s",
          flush=True)


WRK_SCRIPT = """
local names = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/add/" .. names[(i %% #names) + 1])
end
"""


def wrk(urls: list[str], names: list[str], connections: int, seconds: float, tmp: pathlib.Path) -> str:
    """One wrk per url at once, each with ``connections`` connections rotating over ``names``; the
    summed rate, the worst p50/p99 of them and any non-2xx answers."""
    script = tmp / "adds.lua"
    script.write_text(WRK_SCRIPT % ", ".join(f'"{n}"' for n in names))
    procs = [subprocess.Popen(["wrk", "-t1", f"-c{connections}", f"-d{seconds:.0f}s", "--latency", "-s", str(script),
                               url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for url in urls]
    rate, p50, p99, bad = 0.0, 0.0, 0.0, 0
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 60)
        for line in out.splitlines():
            parts = line.split()
            if line.startswith("Requests/sec:"):
                rate += float(parts[1])
            elif parts[:1] == ["50%"]:
                p50 = max(p50, _ms(parts[1]))
            elif parts[:1] == ["99%"]:
                p99 = max(p99, _ms(parts[1]))
            elif "Non-2xx" in line:
                bad += int(parts[-1])
    return f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  {rate:7.0f}/s" + (f"  ({bad} non-2xx)" if bad else "")


def _ms(text: str) -> float:
    for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[:-len(unit)]) * scale
    return float(text)


def journal_messages(nats: NatsServers) -> int:
    """The journal stream's message count, as its leader holds it."""
    counts = []
    for s in nats.servers:
        for acct in nats.monitor(s, "jsz?streams=true").get("account_details", []):
            for st in acct.get("stream_detail", []):
                if st["name"] == STREAM:
                    counts.append(st["state"]["messages"])
    return max(counts)


class SyncCounter:
    """``strace -c -f -e trace=fsync,fdatasync`` attached to the nats-servers while a block runs."""

    def __init__(self, pids: list[int], out: pathlib.Path) -> None:
        self.pids, self.out = pids, out
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "SyncCounter":
        args = ["strace", "-c", "-f", "-e", "trace=fsync,fdatasync", "-o", str(self.out)]
        for pid in self.pids:
            args += ["-p", str(pid)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # attached to every thread
        if self.proc.poll() is not None:
            raise OSError(self.proc.stderr.read().decode(errors="replace").strip() if self.proc.stderr else "strace")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)

    def calls(self) -> int:
        total = 0
        for line in self.out.read_text().splitlines():
            parts = line.split()
            if parts and parts[-1] in ("fsync", "fdatasync"):
                total += int(parts[3])
        return total


def nats_cost(nats: NatsServers, tmp: pathlib.Path, targets: list[tuple[str, str]], n: int, clients: int) -> str:
    before = journal_messages(nats)
    syncs = None
    if shutil.which("strace"):
        try:
            with SyncCounter([s.proc.pid for s in nats.servers if s.proc is not None], tmp / "strace.out") as sc:
                adds(targets, n, clients)
            syncs = sc.calls()
        except OSError as e:
            print(f"  (strace could not attach: {e}; fsyncs not counted)")
            adds(targets, n, clients)
    else:
        adds(targets, n, clients)
    appended = journal_messages(nats) - before
    out = f"{appended / n:.2f} journal appends"
    if syncs is not None:
        out += f", {syncs / n:.2f} fsync+fdatasync calls on the 3 nats-servers ({syncs} for {n})"
    return out + " per request"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--adds", type=int, default=400)
    ap.add_argument("--wrk-seconds", type=float, default=5)
    args = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="duro-cluster-bench-"))
    started: list[ServerProcess] = []

    def node(name: str, urls: list[str] | None) -> ServerProcess:
        extra = ["--cluster", ",".join(urls), "--node", name] if urls else []
        p = ServerProcess(PROJECT, tmp / f"data-{name}", log_path=tmp / f"{name}.log",
                          env={"DURO_TEST_NODE": name}, args=[*extra, "--no-admin"])
        started.append(p)
        return p.start()

    def own(p: ServerProcess, name: str) -> None:
        r = httpx.get(f"{p.url}/add/{name}", timeout=30)
        assert r.status_code == 200 and r.json()["node"] == p.env["DURO_TEST_NODE"], r.text

    try:
        with NatsServers(3) as nats:
            embedded = node("embedded", None)
            a, b, c = node("b-a", nats.urls), node("b-b", nats.urls), node("b-c", nats.urls)
            for k in range(8):
                own(embedded, f"w{k}")
                own(a, f"w{k}")  # 1-node rows: a owns these
            three = [a, b, c]
            for k in range(8):
                own(three[k % 3], f"t{k}")  # 3-node rows: owners spread
            n = args.adds
            print(f"durable increments ({n} per row; 3 nats-servers R=3 with fsync; all on this machine):")
            report("embedded, 1 client", *adds([(embedded.url, "w0")], n, 1))
            report("cluster of 1 node, 1 client", *adds([(a.url, "w0")], n, 1))
            report("cluster of 3 nodes, 1 client, forwarded over NATS", *adds([(b.url, "w0")], n, 1))
            report("embedded, 8 clients", *adds([(embedded.url, f"w{k}") for k in range(8)], n, 8))
            report("cluster of 1 node, 8 clients", *adds([(a.url, f"w{k}") for k in range(8)], n, 8))
            # t{k} lives on node k % 3, client k sends to node (2k + 1) % 3: 2 clients of 8 reach the owner
            spread = [(three[(k * 2 + 1) % 3].url, f"t{k}") for k in range(8)]
            report("cluster of 3 nodes, 8 clients (spread)", *adds(spread, n, 8))
            if shutil.which("wrk") and args.wrk_seconds > 0:
                for k in range(8, 16):
                    own(embedded, f"w{k}")
                    own(a, f"w{k}")
                    own(three[k % 3], f"t{k}")
                ws, ts = [f"w{k}" for k in range(16)], [f"t{k}" for k in range(16)]
                print(f"wrk, 16 connections, 16 objects, {args.wrk_seconds:.0f} s each:")
                print(f"  {'embedded':<52} {wrk([embedded.url], ws, 16, args.wrk_seconds, tmp)}", flush=True)
                print(f"  {'cluster of 1 node':<52} {wrk([a.url], ws, 16, args.wrk_seconds, tmp)}", flush=True)
                print(f"  {'cluster of 3 nodes (a wrk per node, 6 connections)':<52} "
                      f"{wrk([p.url for p in three], ts, 6, args.wrk_seconds, tmp)}", flush=True)
            print("what a request costs the NATS side:")
            print(f"  1 client on the owner:  {nats_cost(nats, tmp, [(a.url, 'w0')], 200, 1)}", flush=True)
            print(f"  8 clients on 3 nodes:   {nats_cost(nats, tmp, spread, 400, 8)}", flush=True)
            for p in (embedded, a, b, c):
                p.stop()
            takeovers = []
            survivor = node("b-s", nats.urls)
            for i in range(args.kills):
                owner = node(f"b-k{i}", nats.urls)
                name = f"kill{i}"
                own(owner, name)
                killed = time.monotonic()
                owner.kill()
                while True:
                    r = httpx.get(f"{survivor.url}/add/{name}", timeout=30)
                    if r.status_code == 200:
                        break
                takeovers.append(time.monotonic() - killed)
                assert r.json()["stored"] == 2, r.text
            if takeovers:
                print(f"take-over after SIGKILL of the owner (lease ttl 3 s), {args.kills} kills: "
                      f"p50 {statistics.median(takeovers):.2f} s, p99 {pct(takeovers, 99):.2f} s, "
                      f"max {max(takeovers):.2f} s")
    finally:
        for p in started:
            p.stop(timeout=20)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
