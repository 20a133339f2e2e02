"""Isolation under ``duro serve --workers N``: what one misbehaving object costs the others.

    python bench/isolation.py                  # every scenario, N = 1 and 2
    python bench/isolation.py --scenario hot --workers 2

Scenarios (the project is bench/workers_project, ``limits.cpu_ms = 1000``):

- ``hot``: wrk drives one hot object (durable SQL increments) with 1,000 connections for
  ``--duration`` seconds, while a probe sends one request at a time, each on a new connection, to
  another object; the probe's p50/p99/max and how many it got through.
- ``spin``: one request makes an object spin in Python forever (the CPU limit stops it after 1 s);
  the probe measures another object meanwhile.
- ``spin_in_c``: one request makes an object spin in C (no Python runs in that worker: only the
  supervisor can stop it, after ``cpu_ms`` + 5 s, by restarting the worker; with one process nothing
  stops it); the probe measures an object owned by the other worker.

The probe's objects are chosen to be owned by the worker that does not own the misbehaving one
(with N = 1 there is only one). Traffic goes to 127.0.0.1 only; every run stops by itself.
"""

from __future__ import annotations

import argparse
import http.client
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
PROJECT = HERE / "workers_project"
sys.path.insert(0, str(HERE.parent / "src"))

from duro.config import load_project  # noqa: E402
from duro.ids import NamespaceKey  # noqa: E402
from duro.runtime.router import owner_of  # noqa: E402
from procs import free_port  # noqa: E402


def name_on(worker: int, count: int, prefix: str) -> str:
    key = NamespaceKey(load_project(PROJECT).unique_key("Counter"))
    return next(f"{prefix}{i}" for i in range(10_000) if owner_of(str(key.id_from_name(f"{prefix}{i}")), count) == worker)


def get(port: int, path: str, timeout: float = 60) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def probe(port: int, path: str, seconds: float) -> dict:
    times, failures = [], 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        try:
            status, _ = get(port, path, timeout=30)
            ok = status == 200
        except OSError:
            ok = False
        times.append(time.monotonic() - t0)
        failures += not ok
        time.sleep(0.01)
    times.sort()
    return {"n": len(times), "failed": failures, "p50_ms": statistics.median(times) * 1000,
            "p99_ms": times[max(0, int(len(times) * 0.99) - 1)] * 1000, "max_ms": times[-1] * 1000}


def scenario(kind: str, workers: int, duration: float) -> dict:
    port = free_port()
    data = tempfile.mkdtemp(prefix="bench-isolation-")
    cmd = [sys.executable, "-m", "duro", "serve", str(PROJECT), "--port", str(port), "--data", data,
           "--log-level", "warning", "--no-admin"]
    cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if get(port, "/entry", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("server did not start")
            time.sleep(0.1)
        bad = name_on(workers - 1, workers, "bad")
        good = name_on(0, workers, "good")
        get(port, f"/obj/{good}")
        get(port, f"/obj/{bad}")
        if kind == "hot":
            lua = pathlib.Path(data) / "hot.lua"
            lua.write_text(f'request = function() return wrk.format("GET", "/obj/{bad}") end\n')
            wrk = subprocess.Popen(["wrk", "-t2", "-c1000", f"-d{int(duration)}s", "-s", str(lua),
                                    f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, text=True)
            time.sleep(1.0)
            res = probe(port, f"/obj/{good}", duration - 2)
            out = wrk.communicate(timeout=duration + 60)[0]
            rps = next((line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")), "?")
            res["hot_rps"] = rps
        else:
            t = threading.Thread(target=lambda: _swallow(port, f"/{kind}/{bad}"), daemon=True)
            t.start()
            time.sleep(0.3)
            res = probe(port, f"/obj/{good}", duration)
        return res
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(data, ignore_errors=True)


def _swallow(port: int, path: str) -> None:
    try:
        get(port, path, timeout=120)
    except OSError:
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="hot,spin,spin_in_c")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--duration", type=float, default=10.0)
    args = ap.parse_args()
    print(f"{'scenario':>10s} {'workers':>7s} {'probe n':>8s} {'failed':>6s} {'p50 ms':>8s} {'p99 ms':>8s} {'max ms':>8s}")
    for kind in args.scenario.split(","):
        for w in args.workers.split(","):
            if kind == "spin_in_c" and w == "1":
                print(f"{kind:>10s} {w:>7s}   (one process: nothing stops C code that never returns; skipped)")
                continue
            r = scenario(kind, int(w), args.duration)
            extra = f"   hot object {r['hot_rps']} req/s" if "hot_rps" in r else ""
            print(f"{kind:>10s} {w:>7s} {r['n']:>8d} {r['failed']:>6d} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} "
                  f"{r['max_ms']:8.1f}{extra}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
