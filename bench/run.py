"""Throughput and latency of durable writes: duro beside workerd, measured the same way in one run.

    python bench/run.py                      # duro only
    python bench/run.py --workerd            # also Cloudflare's runtime (npm package workerd)
    python bench/run.py --rounds 3 --duration 10
    python bench/run.py --compare ../old/src  # also another checkout's duro (before/after in one run)
    python bench/run.py --workers 1,2 --workerd  # duro with 1 and with 2 worker processes
    python bench/run.py --supervised         # also duro's one worker under its supervisor (its cost)

Workloads (the anchor of ../shared/anchors): GET /obj/hot (one hot object, SQL UPSERT counter),
GET /obj/o<1..1000> (counters spread over 1,000 existing objects), obj_new (every request the first
write of a new object), obj_1000_after_new (obj_1000 right after 2,000 objects were created: the
cost of their background work to the foreground), GET /kv/hot (KV get+put),
GET /hello (no object). The load generator is wrk (Debian package `wrk`): 1 thread, 64 connections,
pinned to core 1; the server is pinned to core 0. Systems run alternately (A B A B ...); the
report gives medians per workload and the duro/workerd ratios. Traffic goes to 127.0.0.1 only and
every run stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
ANCHORS = ROOT.parent / "shared" / "anchors"

LUA = """
local prefix = os.getenv("PREFIX") or "/obj/"
local nobj = tonumber(os.getenv("NOBJ") or "1000")
math.randomseed(os.time())
request = function()
  return wrk.format("GET", prefix .. "o" .. math.random(1, nobj))
end
"""

LUA_NEW = """
-- wrk script: every request is the first write of a new object (a name never used before).
local n = 0
math.randomseed(os.time())
local tag = tostring(math.random(1, 1000000000))
request = function()
  n = n + 1
  return wrk.format("GET", "/obj/n" .. tag .. "-" .. n)
end
"""

WORKLOADS = {
    "obj_hot": ("/obj/hot", None),
    "obj_1000": ("/", "obj"),
    "obj_new": ("/", "new"),
    # obj_1000 measured right after 2,000 new objects were created as fast as they go: what the
    # background work those creations leave behind (closes, syncs, pruning) does to the foreground.
    "obj_1000_after_new": ("/", "obj"),
    "kv_hot": ("/kv/hot", None),
    "hello": ("/hello", None),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("server did not start")


def taskset(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") and os.cpu_count() and os.cpu_count() > 1 else []


class Duro:
    """``duro serve`` from this checkout, or (``src``) from another checkout's ``src/`` folder."""

    def __init__(self, durability: str, src: pathlib.Path | None = None, name: str = "duro", workers: int = 1,
                 supervised: bool = False) -> None:
        self.durability = durability
        self.src = src
        self.name = name
        self.workers = workers
        self.supervised = supervised

    def start(self, port: int, data: str) -> subprocess.Popen:
        # One process is pinned to core 0 (wrk has core 1); several workers get every core.
        pin = taskset(0) if self.workers == 1 else []
        cmd = pin + [sys.executable, "-m", "duro", "serve", str(HERE / "project"), "--port", str(port),
                     "--data", data, "--durability", self.durability, "--log-level", "warning"]
        if self.workers > 1 or not self.supervised:
            cmd += ["--workers", str(self.workers)]
        else:  # a memory limit makes the supervisor run its one worker
            cmd += ["--workers", "1", "--memory-limit", "16G"]
        env = dict(os.environ)
        if self.src is not None:
            env["PYTHONPATH"] = str(self.src) + os.pathsep + env.get("PYTHONPATH", "")
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


class Workerd:
    name = "workerd"

    def __init__(self) -> None:
        cache = pathlib.Path(os.environ.get("DURO_BENCH_CACHE", pathlib.Path.home() / ".cache" / "duro-bench"))
        self.bin = cache / "node_modules" / ".bin" / "workerd"
        if not self.bin.exists():
            cache.mkdir(parents=True, exist_ok=True)
            subprocess.run(["npm", "install", "--silent", "--prefix", str(cache), "workerd"], check=True)
        self.config_dir = pathlib.Path(tempfile.mkdtemp(prefix="workerd-cfg-"))

    def start(self, port: int, data: str) -> subprocess.Popen:
        src = (ANCHORS / "workerd" / "config.capnp").read_text().replace("127.0.0.1:8787", f"127.0.0.1:{port}")
        (self.config_dir / "config.capnp").write_text(src)
        shutil.copy(ANCHORS / "workerd" / "worker.js", self.config_dir / "worker.js")
        cmd = taskset(0) + [str(self.bin), "serve", str(self.config_dir / "config.capnp"),
                            "--directory-path", f"do-disk={data}"]
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def parse_wrk(out: str) -> dict[str, float]:
    def ms(text: str) -> float:
        m = re.match(r"([\d.]+)(us|ms|s|m)", text)
        if not m:
            return float("nan")
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v if unit == "ms" else v * 1000 if unit == "s" else v * 60000
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "non2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": sock.group(1) if sock else ""}


def run_wrk(port: int, workload: str, duration: int, connections: int, lua: pathlib.Path) -> dict[str, float]:
    path, kind = WORKLOADS[workload]
    cmd = taskset(1) + ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s"]
    env = dict(os.environ)
    if kind == "obj":
        cmd += ["-s", str(lua)]
        env.update(PREFIX="/obj/", NOBJ="1000")
    elif kind == "new":
        cmd += ["-s", str(lua.with_name("new_obj.lua"))]
    cmd.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=duration + 60).stdout
    return parse_wrk(out)


def create_objects(port: int, n: int) -> None:
    """Create ``n`` new objects (one first write each), 32 at a time."""
    from concurrent.futures import ThreadPoolExecutor
    tag = os.urandom(4).hex()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda i: urllib.request.urlopen(f"http://127.0.0.1:{port}/obj/c{tag}-{i}", timeout=30).read(),
                      range(n)))


def prefill(port: int) -> None:
    for i in range(1, 1001):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/obj/o{i}", timeout=30).read()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workerd", action="store_true", help="also measure workerd (npm package, cached)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per system (default 3)")
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--workloads", default="obj_hot,obj_1000,obj_new,obj_1000_after_new,kv_hot,hello")
    ap.add_argument("--durability", default="fsync", choices=["fsync", "os"])
    ap.add_argument("--compare", type=pathlib.Path, metavar="SRC",
                    help="also measure the duro of another checkout's src/ folder (shown as 'before')")
    ap.add_argument("--workers", default="1", help="duro's worker counts to measure, e.g. 1,2 (default 1)")
    ap.add_argument("--supervised", action="store_true",
                    help="also duro's one worker under the supervisor (what supervision costs)")
    ap.add_argument("--out", default=str(HERE / "results" / "run.json"))
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    systems: list[Duro | Workerd] = [Duro(args.durability, workers=int(n), name="duro" if n == "1" else f"duro-w{n}")
                                     for n in args.workers.split(",")]
    if args.supervised:
        systems.append(Duro(args.durability, name="duro-sup", supervised=True))
    if args.compare is not None:
        systems.append(Duro(args.durability, src=args.compare.resolve(), name="before"))
    if args.workerd:
        systems.append(Workerd())
    workloads = args.workloads.split(",")
    lua = pathlib.Path(tempfile.mkdtemp()) / "random_obj.lua"
    lua.write_text(LUA)
    lua.with_name("new_obj.lua").write_text(LUA_NEW)
    results: dict[str, dict[str, list[dict[str, float]]]] = {s.name: {w: [] for w in workloads} for s in systems}
    for rnd in range(args.rounds):
        for system in systems:
            data = tempfile.mkdtemp(prefix=f"bench-{system.name}-")
            port = free_port()
            proc = system.start(port, data)
            try:
                wait_port(port, proc)
                if any(w.startswith("obj_1000") for w in workloads):
                    prefill(port)
                for w in workloads:
                    if w == "obj_1000_after_new":
                        create_objects(port, 2000)
                    r = run_wrk(port, w, args.duration, args.connections, lua)
                    results[system.name][w].append(r)
                    print(f"round {rnd + 1} {system.name:8s} {w:9s} {r['rps']:9.0f} req/s  "
                          f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  non2xx {r['non2xx']}", flush=True)
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                shutil.rmtree(data, ignore_errors=True)
    print("\nmedians (%d rounds, %ds each, %d connections, durability=%s)" %
          (args.rounds, args.duration, args.connections, args.durability))
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for s in systems:
        summary[s.name] = {}
        for w in workloads:
            rs = results[s.name][w]
            summary[s.name][w] = {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_ms", "p99_ms")}
    header = f"{'workload':10s}" + "".join(f"{s.name + ' req/s':>15s}{'p50 ms':>9s}{'p99 ms':>9s}" for s in systems)
    # Each duro beside the reference: workerd if it ran, else the first system.
    ref = "workerd" if args.workerd else systems[0].name
    ratios = [s.name for s in systems if s.name != ref]
    header += "".join(f"{s + '/' + ref:>16s}" for s in ratios)
    print(header)
    for w in workloads:
        line = f"{w:10s}"
        for s in systems:
            m = summary[s.name][w]
            line += f"{m['rps']:15.0f}{m['p50_ms']:9.2f}{m['p99_ms']:9.2f}"
        for o in ratios:
            line += f"{summary[o][w]['rps'] / summary[ref][w]['rps']:16.2f}"
        print(line)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "runs": results, "medians": summary}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
