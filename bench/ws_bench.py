"""WebSocket scale: memory per idle hibernated connection, and broadcast rate.

    python bench/ws_bench.py                          # 10,000 connections, 10 rooms, 20 broadcasts
    python bench/ws_bench.py --connections 2000 --rooms 2

Starts `duro serve bench/ws_project` (pinned to core 0 when there are two), opens N WebSocket
connections from this process (clients on 127.0.0.1 only) spread over R rooms, waits until every
room has hibernated (no instance in memory, all sockets open), and reports the server's RSS growth
per connection. Then it broadcasts: one message to the 1,000-ish sockets of room 0, B times, and
reports messages delivered per second (send of the trigger to the last client's receipt) and the
server's CPU time per delivered message (the clients share the machine and are Python too, so the
rate is a floor; the CPU figure is what the server itself spends). Every step has a deadline; the
whole run stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from websockets.asyncio.client import connect

HERE = pathlib.Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


async def wait_until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def open_all(base: str, n: int, rooms: int, parallel: int = 100) -> list:
    sem = asyncio.Semaphore(parallel)
    conns: list = [None] * n

    async def one(i: int) -> None:
        async with sem:
            conns[i] = await connect(f"{base}/room/r{i % rooms}", max_size=None, ping_interval=None,
                                     open_timeout=60, max_queue=None)

    await asyncio.gather(*(one(i) for i in range(n)))
    return conns


async def bench(args: argparse.Namespace, port: int, pid: int) -> dict:
    base = f"ws://127.0.0.1:{port}"
    http = f"http://127.0.0.1:{port}"
    # Warm up: import everything, build one room once, then let it go.
    warm = await connect(f"{base}/room/warmup")
    await warm.close()
    await asyncio.sleep(0.5)
    rss0 = rss_kib(pid)

    t0 = time.monotonic()
    conns = await open_all(base, args.connections, args.rooms)
    t_open = time.monotonic() - t0
    await wait_until(lambda: get_json(http + "/stats")["sockets"] >= args.connections, 60, "all sockets accepted")
    await wait_until(lambda: get_json(http + "/stats")["instances_with_sockets"] == 0, args.hibernation_timeout + 30,
                     "every room to hibernate")
    await asyncio.sleep(1.0)
    rss1 = rss_kib(pid)
    stats = get_json(http + "/stats")
    per_conn = (rss1 - rss0) * 1024 / args.connections

    room0 = [c for i, c in enumerate(conns) if i % args.rooms == 0]
    sender = room0[0]
    times = []
    cpu0 = cpu_s(pid)
    for k in range(args.broadcasts):
        t = time.monotonic()
        await sender.send(f"b:{k}")
        got = await asyncio.wait_for(asyncio.gather(*(c.recv() for c in room0)), 60)
        times.append(time.monotonic() - t)
        assert all(g == str(k) for g in got), "a client received the wrong message"
    total = sum(times)
    delivered = len(room0) * args.broadcasts
    server_cpu = cpu_s(pid) - cpu0

    t0 = time.monotonic()
    await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    t_close = time.monotonic() - t0
    return {
        "connections": args.connections, "rooms": args.rooms, "open_s": round(t_open, 2),
        "close_s": round(t_close, 2), "server_rss_before_mib": round(rss0 / 1024, 1),
        "server_rss_hibernated_mib": round(rss1 / 1024, 1), "bytes_per_connection": round(per_conn),
        "stats_when_hibernated": stats, "broadcast_sockets": len(room0), "broadcasts": args.broadcasts,
        "broadcast_msgs_per_s": round(delivered / total), "broadcast_ms_median": round(sorted(times)[len(times) // 2] * 1000, 1),
        "first_broadcast_ms (wakes the room)": round(times[0] * 1000, 1),
        "server_cpu_us_per_delivered_msg": round(server_cpu / delivered * 1e6, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--rooms", type=int, default=10)
    ap.add_argument("--broadcasts", type=int, default=20)
    ap.add_argument("--hibernation-timeout", type=float, default=1.0)
    ap.add_argument("--deadline", type=float, default=600, help="stop everything after this many seconds")
    ap.add_argument("--out", default=str(HERE / "results" / "ws.json"))
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, args.connections * 2 + 1000)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    data = tempfile.mkdtemp(prefix="ws-bench-")
    port = free_port()
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []
    cmd = pin + [sys.executable, "-m", "duro", "serve", str(HERE / "ws_project"), "--port", str(port),
                 "--data", data, "--log-level", "warning", "--workers", "1",
                 "--hibernation-timeout", str(args.hibernation_timeout)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start")
                time.sleep(0.1)
        result = asyncio.run(asyncio.wait_for(bench(args, port, proc.pid), args.deadline))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(data, ignore_errors=True)
    for k, v in result.items():
        print(f"{k:40s} {v}")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
