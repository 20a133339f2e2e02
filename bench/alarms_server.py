"""Alarms at scale on the real server: 10,000 objects with alarms due within one second, with one
worker process and with two, objects left open or closed (evicted) before their alarms are due.

    python bench/alarms_server.py                       # N = 1 and 2, open and closed, 10,000 alarms
    python bench/alarms_server.py --workers 2 --state closed --objects 20000

Each object arms its alarm over HTTP (``/arm/<name>?<due ms>``), spread evenly over ``--window``
seconds that start ``--lead`` seconds later. ``closed``: the server runs with ``--idle-timeout 1``, so
every instance is dropped and every database closed long before its alarm (each firing opens its
database and builds the object: a cold wake). Each ``alarm()`` appends its lateness (ms after the due
time) to a file of its worker; the bench waits for all of them and reports p50/p99/max lateness,
whether each fired exactly once, and the CPU time the server's processes spent per alarm during the
firing (schedstat, nanoseconds: every process of the server, so it includes the journal's fsyncs and
the writes of the handlers). Traffic goes to 127.0.0.1 only; every run stops by itself.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
PROJECT = HERE / "alarms_project"
sys.path.insert(0, str(HERE))

from procs import children, cpu_ns, free_port  # noqa: E402


def server_pids(pid: int) -> list[int]:
    return [pid, *children(pid).values()]


def arm_all(port: int, names: list[str], due: list[int]) -> None:
    def arm(chunk: list[int]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for i in chunk:
            conn.request("GET", f"/arm/{names[i]}?{due[i]}")
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise RuntimeError(f"arming failed: {r.status} {body[:200]!r}")
        conn.close()
    chunks = [list(range(k, len(names), 32)) for k in range(32)]
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        list(pool.map(arm, chunks))


def run(workers: int, state: str, objects: int, window: float, lead: float, timeout: float) -> dict:
    data = tempfile.mkdtemp(prefix="bench-alarms-")
    out = tempfile.mkdtemp(prefix="bench-alarms-out-")
    port = free_port()
    cmd = [sys.executable, "-m", "duro", "serve", str(PROJECT), "--port", str(port), "--data", data,
           "--log-level", "warning", "--no-admin"]
    cmd += ["--workers", str(workers)]
    # closed: every object evicted long before its alarm; open: none evicted (the lead is long)
    cmd += ["--idle-timeout", "1" if state == "closed" else "3600"]
    env = dict(os.environ, DURO_BENCH_ALARMS_OUT=out)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/arm/warmup?0")
                c.getresponse().read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        names = [f"t{i}" for i in range(objects)]
        start = int(time.time() * 1000 + lead * 1000)
        due = [start + int(window * 1000 * i / objects) for i in range(objects)]
        t0 = time.monotonic()
        arm_all(port, names, due)
        armed_in = time.monotonic() - t0
        left = start / 1000 - time.time()
        if left < (1.5 if state == "closed" else 0.2):
            raise RuntimeError(f"arming took {armed_in:.1f} s, past the lead: use a longer --lead")
        time.sleep(max(0.0, left - 0.3))
        pids = server_pids(proc.pid)
        c0 = cpu_ns(pids)

        def fired() -> list[tuple[str, float]]:
            rows = []
            for f in pathlib.Path(out).glob("lateness-*.txt"):
                for line in f.read_text().splitlines():
                    name, _, ms = line.partition(" ")
                    if name != "warmup" and ms:
                        rows.append((name, float(ms)))
            return rows
        end = time.monotonic() + window + timeout
        while time.monotonic() < end and len(fired()) < objects:
            time.sleep(0.2)
        c1 = cpu_ns(pids)
        time.sleep(1.0)  # duplicates would show up now
        rows = fired()
        late = sorted(ms for _, ms in rows)
        n = len(late)
        unique = len({name for name, _ in rows})
        return {"workers": workers, "state": state, "objects": objects, "fired": unique, "duplicates": n - unique,
                "armed_s": armed_in, "p50_ms": statistics.median(late), "p99_ms": late[int(n * 0.99) - 1],
                "max_ms": late[-1], "cpu_us_per_alarm": (c1 - c0) / max(1, n) / 1000}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--state", default="open,closed")
    ap.add_argument("--objects", type=int, default=10_000)
    ap.add_argument("--window", type=float, default=1.0)
    ap.add_argument("--lead", type=float, default=25.0, help="seconds from the start of arming to the first due time")
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    print(f"{args.objects} alarms due within {args.window:g} s")
    print(f"{'workers':>7s} {'state':>7s} {'fired':>6s} {'twice':>6s} {'p50 ms':>8s} {'p99 ms':>8s} {'max ms':>8s} {'CPU us/alarm':>13s}")
    for w in args.workers.split(","):
        for state in args.state.split(","):
            r = run(int(w), state, args.objects, args.window, args.lead, args.timeout)
            print(f"{r['workers']:>7d} {r['state']:>7s} {r['fired']:>6d} {r['duplicates']:>6d} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} "
                  f"{r['max_ms']:8.1f} {r['cpu_us_per_alarm']:13.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
