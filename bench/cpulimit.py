"""What the CPU limit (limits.cpu_ms, runtime/cpulimit.py) costs on the hot path. Short: ~20 s.

    python bench/cpulimit.py                  # 20,000 RPC events per round, 5 rounds each way

1. Events: a trivial RPC method (returns a value; no storage) called in-process, with the limit on
   (a Budget and a context-variable set/reset per event; the profiling timer ticking) and off
   (``start_event``/``end_event`` replaced by no-ops, no timer). Rounds alternate; the median
   per-event time of each is reported.
2. SQL: one CPU-bound statement (a recursive CTE of 2 million rows) on an apsw connection with the
   progress handler duro installs (``over_budget`` every ``PROGRESS_STEPS`` VM steps) and without.
3. The exact added work, timed alone (timeit): one event's ``start_event`` + ``end_event``; one
   tick of the timer; one progress check. 1 and 2 are end-to-end but noisy on a shared machine;
   3 is what the limit adds, without the noise.

Results go to bench/results/cpulimit.json.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import statistics
import sys
import tempfile
import time
import timeit

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import apsw  # noqa: E402

from duro import DurableObject  # noqa: E402
from duro.api import App, ObjectClass  # noqa: E402
from duro.cli.serve import tune_gc  # noqa: E402
from duro.runtime import Runtime, cpulimit  # noqa: E402
from duro.storage.connection import PROGRESS_STEPS  # noqa: E402
from inprocess import run_and_save  # noqa: E402

SQL = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) SELECT count(*) FROM c"


class Echo(DurableObject):
    async def echo(self, x):
        return x


class _Off:
    fired = False


def _no_limit() -> tuple[object, ...]:
    real = (cpulimit.start_event, cpulimit.end_event, cpulimit.install)
    off = _Off()
    cpulimit.start_event = lambda limit, cb: (off, None)  # type: ignore[assignment]
    cpulimit.end_event = lambda b, t: None  # type: ignore[assignment]
    cpulimit.install = lambda cpu_ms: False  # type: ignore[assignment]
    return real


async def _round(events: int, limited: bool) -> float:
    real = None
    if not limited:
        real = _no_limit()
    try:
        with tempfile.TemporaryDirectory() as data:
            app = App(Runtime(data, durability="os", history_retention=0),
                      [ObjectClass("ECHO", Echo, "bench-Echo")])
            await app.start()
            try:
                stub = app.env.ECHO.get_by_name("one")
                await stub.echo(0)
                started = time.perf_counter()
                for i in range(events):
                    await stub.echo(i)
                return (time.perf_counter() - started) / events
            finally:
                await app.close()
    finally:
        if real is not None:
            cpulimit.start_event, cpulimit.end_event, cpulimit.install = real  # type: ignore[misc]


def _sql(progress: bool) -> float:
    conn = apsw.Connection(":memory:")
    if progress:
        conn.set_progress_handler(cpulimit.over_budget, PROGRESS_STEPS)
    started = time.perf_counter()
    conn.execute(SQL).fetchall()
    return time.perf_counter() - started


async def main(args: argparse.Namespace) -> dict:
    tune_gc()  # as the server does
    on: list[float] = []
    off: list[float] = []
    for _ in range(args.rounds):
        on.append(await _round(args.events, True))
        off.append(await _round(args.events, False))
    sql_on = [_sql(True) for _ in range(args.rounds)]
    sql_off = [_sql(False) for _ in range(args.rounds)]
    ev_on, ev_off = statistics.median(on), statistics.median(off)
    n = 200_000
    pair = timeit.timeit("b, t = start_event(30.0, None); end_event(b, t)", number=n,
                         globals={"start_event": cpulimit.start_event, "end_event": cpulimit.end_event}) / n
    check = timeit.timeit("over_budget()", number=n, globals={"over_budget": cpulimit.over_budget}) / n
    tick = timeit.timeit("on_tick(26, None)", number=n, globals={"on_tick": cpulimit._on_tick}) / n
    s_on, s_off = statistics.median(sql_on), statistics.median(sql_off)
    return {
        "events_per_round": args.events, "rounds": args.rounds,
        "event_us_limit_on": round(ev_on * 1e6, 2), "event_us_limit_off": round(ev_off * 1e6, 2),
        "event_overhead_us": round((ev_on - ev_off) * 1e6, 2),
        "event_overhead_pct": round((ev_on / ev_off - 1) * 100, 1),
        "sql_s_progress_on": round(s_on, 4), "sql_s_progress_off": round(s_off, 4),
        "sql_overhead_pct": round((s_on / s_off - 1) * 100, 1),
        "start_end_event_us": round(pair * 1e6, 3), "progress_check_us": round(check * 1e6, 3),
        "tick_us_no_event": round(tick * 1e6, 3),
        # one check every PROGRESS_STEPS VM steps; a tick every 10 ms of CPU
        "tick_share_pct": round(tick / cpulimit.TICK_S * 100, 4),
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    (HERE / "results").mkdir(exist_ok=True)
    run_and_save(main(args), HERE / "results" / "cpulimit.json")
