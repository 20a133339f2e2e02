"""Alarm delivery latency: N objects, each with an alarm due inside one short window; reports the
time from each alarm's due time to the start of its ``alarm()`` handler (p50, p90, p99, max), and
checks that every alarm fired exactly once.

    python bench/alarms.py                          # 10,000 objects, due within 1 s, default limits
    python bench/alarms.py --state evicted          # every object evicted before its alarm
    python bench/alarms.py --state warm --objects 2000   # every database kept open
    python bench/alarms.py --durability os

In-process (no HTTP): the objects set their alarms through RPC, then wait. ``--state default``
leaves the runtime as it is (instances in memory; at most ``max_open_databases`` = 2,000 databases
open, so most alarms reopen their database); ``evicted`` evicts every object first (database
closed, instance dropped: each alarm reopens and reconstructs); ``warm`` raises the open-database
bound so that no alarm has to open a file. The scheduler runs on the real clock, with the default
fsync durability. Results go to bench/results/alarms-<state>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
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
from duro.runtime import Runtime, RuntimeLimits  # noqa: E402

LATENCY_MS: list[float] = []
FIRED: collections.Counter[str] = collections.Counter()


class Timer(DurableObject):
    async def arm(self, when: int) -> None:
        await self.ctx.storage.set_alarm(when)

    async def alarm(self, info) -> None:
        LATENCY_MS.append(time.time_ns() / 1e6 - info.scheduled_time)
        FIRED[self.ctx.id.name] += 1


GC_PAUSES: list[tuple[int, float]] = []  # (generation, seconds) of each collection while alarms fire
_gc_start = 0.0


def _gc_watch(phase: str, info: dict) -> None:
    global _gc_start
    if phase == "start":
        _gc_start = time.perf_counter()
    else:
        GC_PAUSES.append((info["generation"], time.perf_counter() - _gc_start))


async def run(args: argparse.Namespace) -> dict:
    data = pathlib.Path(tempfile.mkdtemp(prefix="duro-bench-alarms-"))
    limits = RuntimeLimits(max_open_databases=max(2 * args.objects, 2000)) if args.state == "warm" else None
    runtime = Runtime(data, durability=args.durability, limits=limits)
    app = App(runtime, [ObjectClass("TIMER", Timer, "bench-alarms-Timer")])
    await app.start()
    tune_gc()  # as the server does
    ns = app.env.TIMER
    n = args.objects
    try:
        t0 = time.monotonic()
        lead = args.lead if args.lead is not None else 5 + n / 100
        base = runtime.clock.now_ms() + int(lead * 1000)
        whens = [base + (i * int(args.window * 1000)) // n for i in range(n)]
        stubs = [ns.get_by_name(f"t{i}") for i in range(n)]
        for start in range(0, n, 500):
            await asyncio.gather(*(stubs[i].arm(whens[i]) for i in range(start, min(n, start + 500))))
        setup_s = time.monotonic() - t0
        if runtime.clock.now_ms() >= base:
            raise SystemExit(f"setting {n} alarms took {setup_s:.1f}s, longer than --lead {lead}s")
        evicted = runtime.sweep(now=time.monotonic() + 1e9) if args.state == "evicted" else 0
        print(f"set {n} alarms in {setup_s:.2f}s; evicted {evicted}; due in "
              f"{(base - runtime.clock.now_ms()) / 1000:.1f}s within {args.window}s", file=sys.stderr)
        deadline = time.monotonic() + lead + args.window + args.timeout
        await asyncio.sleep(max(0.0, (base - runtime.clock.now_ms()) / 1000 - 0.01))
        cpu0 = time.thread_time()  # the event loop's thread: its CPU time per alarm while they fire
        profiler = None
        if args.profile:
            import cProfile
            profiler = cProfile.Profile()
            profiler.enable()
        gc.callbacks.append(_gc_watch)
        while len(LATENCY_MS) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        done_at = runtime.clock.now_ms()
        loop_cpu_s = time.thread_time() - cpu0
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        gc.callbacks.remove(_gc_watch)
        await asyncio.sleep(args.settle)  # anything firing twice would show up now
        await runtime.alarms.wait_idle(timeout=60)
        stats = runtime.alarms.statistics()
        barrier = runtime.barrier.statistics()
    finally:
        await app.close()
    lat = LATENCY_MS
    result = {
        "objects": n, "window_s": args.window, "state": args.state, "durability": args.durability,
        "setup_s": round(setup_s, 2), "fired": len(lat), "distinct_objects": len(FIRED),
        "fired_more_than_once": sum(1 for c in FIRED.values() if c > 1),
        "last_fired_after_window_ms": done_at - (base + int(args.window * 1000)),
        "loop_cpu_us_per_alarm": round(loop_cpu_s / max(1, len(lat)) * 1e6, 1),
        "gc_while_firing": {"collections": len(GC_PAUSES), "total_ms": round(sum(d for _, d in GC_PAUSES) * 1e3, 1),
                            "max_ms": round(max((d for _, d in GC_PAUSES), default=0) * 1e3, 1),
                            "gen2": sum(1 for g, _ in GC_PAUSES if g == 2)},
        "latency_ms": {"p50": round(pct(lat, 50), 2), "p90": round(pct(lat, 90), 2),
                       "p99": round(pct(lat, 99), 2), "max": round(max(lat), 2),
                       "mean": round(statistics.fmean(lat), 2)} if lat else None,
        "index_records_left": stats["records"], "scheduler": stats, "barrier": barrier,
        "python": sys.version.split()[0], "command": " ".join(["python", "bench/alarms.py", *sys.argv[1:]]),
    }
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objects", type=int, default=10_000)
    p.add_argument("--window", type=float, default=1.0, help="alarms are spread evenly over this many seconds")
    p.add_argument("--lead", type=float, default=None,
                   help="first alarm is due this long after setup starts (default: 10 ms per object + 5 s)")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--settle", type=float, default=2.0, help="seconds to watch for duplicate firings")
    p.add_argument("--durability", choices=["fsync", "os"], default="fsync")
    p.add_argument("--state", choices=["default", "evicted", "warm"], default="default")
    p.add_argument("--profile", default=None, metavar="FILE",
                   help="write a cProfile of the event loop while the alarms fire to FILE")
    p.add_argument("--out", default=None, help="default: bench/results/alarms-<state>.json")
    args = p.parse_args()
    result = run_and_save(run(args), args.out or HERE / "results" / f"alarms-{args.state}.json")
    ok = result["fired"] == args.objects and result["fired_more_than_once"] == 0 and result["index_records_left"] == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
