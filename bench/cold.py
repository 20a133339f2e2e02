"""Waking closed objects: how fast the runtime reopens an object's database and runs one event.

    python bench/cold.py                       # 3,000 objects, 64 calls in flight, 3 rounds
    python bench/cold.py --objects 5000 --concurrency 256

Each object is written once, then every object is evicted (instance dropped, database closed, the
close finished on the worker thread). A round calls ``touch()`` (a KV get and put, so a durable
commit) on every object once, ``--concurrency`` calls in flight; then all are evicted again. It
reports wakes per second, the latency of one wake (p50, p99) and the event loop's CPU time per wake
(median of the rounds). In-process, through RPC (no HTTP); fsync durability; history on, as by
default. Results go to bench/results/cold.json.

This is the cost that a per-tenant service pays for every tenant that is not in memory, and that
an alarm pays when its object was evicted (bench/alarms.py ``--state evicted``).
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import statistics
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from duro import DurableObject  # noqa: E402
from inprocess import pct, run_and_save  # noqa: E402
from duro.api import App, ObjectClass  # noqa: E402
from duro.cli.serve import tune_gc  # noqa: E402
from duro.runtime import Runtime  # noqa: E402
from duro.storage.closing import closing_any  # noqa: E402  (databases whose close is finishing)


class Tenant(DurableObject):
    async def touch(self) -> int:
        n = (await self.ctx.storage.get("n") or 0) + 1
        await self.ctx.storage.put("n", n)
        return n


async def evict_all(runtime: Runtime) -> int:
    n = runtime.sweep(now=time.monotonic() + 1e9)
    # The closes finish on the maintenance thread; let them, so a round measures only its own work.
    while closing_any():
        await asyncio.sleep(0.05)
    return n


async def run(args: argparse.Namespace) -> dict:
    data = pathlib.Path(tempfile.mkdtemp(prefix="duro-bench-cold-"))
    runtime = Runtime(data, durability=args.durability)
    app = App(runtime, [ObjectClass("TENANT", Tenant, "bench-cold-Tenant")])
    await app.start()
    tune_gc()  # as the server does
    ns = app.env.TENANT
    stubs = [ns.get_by_name(f"tenant-{i}") for i in range(args.objects)]
    rounds = []
    profiler = None
    if args.profile:
        import cProfile
        profiler = cProfile.Profile()
    try:
        for start in range(0, len(stubs), 500):
            await asyncio.gather(*(s.touch() for s in stubs[start:start + 500]))
        for r in range(args.rounds):
            evicted = await evict_all(runtime)
            lat: list[float] = []
            sem = asyncio.Semaphore(args.concurrency)

            async def wake(stub) -> None:
                async with sem:
                    t = time.perf_counter()
                    await stub.touch()
                    lat.append((time.perf_counter() - t) * 1e3)

            if profiler is not None:
                profiler.enable()
            cpu0, t0 = time.thread_time(), time.perf_counter()
            await asyncio.gather(*(wake(s) for s in stubs))
            wall, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
            if profiler is not None:
                profiler.disable()
            rounds.append({"evicted_before": evicted, "wakes_per_s": round(len(stubs) / wall),
                           "p50_ms": round(pct(lat, 50), 2), "p99_ms": round(pct(lat, 99), 2),
                           "loop_cpu_us_per_wake": round(cpu / len(stubs) * 1e6, 1)})
            print(f"round {r + 1}: {rounds[-1]}", file=sys.stderr)
    finally:
        await app.close()
    if profiler is not None:
        profiler.dump_stats(args.profile)
    med = {k: statistics.median(rd[k] for rd in rounds)
           for k in ("wakes_per_s", "p50_ms", "p99_ms", "loop_cpu_us_per_wake")}
    return {"objects": args.objects, "concurrency": args.concurrency, "durability": args.durability,
            "median": med, "rounds": rounds, "python": sys.version.split()[0],
            "command": " ".join(["python", "bench/cold.py", *sys.argv[1:]])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objects", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--durability", choices=["fsync", "os"], default="fsync")
    p.add_argument("--profile", default=None, metavar="FILE", help="write a cProfile of the rounds to FILE")
    p.add_argument("--out", default=None, help="default: bench/results/cold.json")
    args = p.parse_args()
    run_and_save(run(args), args.out or HERE / "results" / "cold.json")


if __name__ == "__main__":
    main()
