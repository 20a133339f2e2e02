"""What point-in-time recovery costs: write throughput with history on vs off, history disk per
million small writes, and the time to restore a 100 MB object to one hour back.

    python bench/history.py                 # the full run (~1-2 min on 2 CPUs)
    python bench/history.py --quick         # smaller sizes, for a smoke test

1. Throughput, measured twice, history off then on, same workload:
   a. storage only: one ObjectDatabase, one small KV put (100 random bytes, 1,000 keys) per commit,
      no fsync — the raw cost of the journal hook (worst case: nothing else to hide it);
   b. runtime: an App (in-process, no HTTP) with the default fsync durability, 64 objects, 64
      concurrent callers each doing sequential RPC puts — what a user's requests see. Three
      alternating off/on rounds; the round with the median cost is reported.
2. Disk: the history size after N small writes (each its own commit) is divided by N and scaled
   to 1,000,000 writes (extrapolated from N, printed as such).
3. Restore: a 100 MB object (random, incompressible rows) is built at fake time T0, then 72,000
   small writes are stamped 100 ms apart (two hours of fake time; --quick: 7,200, 1 s apart). "Now" is the last write; the
   target is bookmark_for_time(now - 1 h). The clock is faked through HistoryOptions.now_ms, so
   the run takes seconds, not hours. Restore = materialise the target state, swap it in, fsync,
   and append the restore's own record (the pages that differ from the state before it).

Results go to bench/results/history.json (ignored by git).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from duro import DurableObject  # noqa: E402
from duro.api import App, ObjectClass  # noqa: E402
from duro.runtime import Runtime  # noqa: E402
from duro.storage import ObjectDatabase  # noqa: E402
from duro.storage import history as H  # noqa: E402
from duro.storage.journal import HistoryOptions, history_path  # noqa: E402


class FakeClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def storage_throughput(root: pathlib.Path, n: int, history: bool) -> float:
    path = root / f"tp-{history}.sqlite"
    db = ObjectDatabase(path, history=HistoryOptions() if history else None)
    vals = [os.urandom(100) for _ in range(256)]
    db.kv_put("warm", 1)
    db.commit()
    t = time.perf_counter()
    for i in range(n):
        db.kv_put(f"k{i % 1000}", vals[i % 256])
        db.commit()
    dt = time.perf_counter() - t
    db.close()
    return n / dt


class Writer(DurableObject):
    async def put(self, i: int, v: bytes) -> None:
        await self.ctx.storage.put(f"k{i % 1000}", v)


async def runtime_throughput(root: pathlib.Path, n: int, history: bool, objects: int = 64) -> float:
    data = root / f"rt-{history}"
    rt = Runtime(data, durability="fsync", history_retention=30 if history else 0)
    app = App(rt, [ObjectClass("W", Writer, "bench-Writer")])
    await app.start()
    try:
        stubs = [app.env.W.get_by_name(f"o{i}") for i in range(objects)]
        v = os.urandom(100)
        await asyncio.gather(*(s.put(0, v) for s in stubs))
        per = n // objects

        async def caller(stub):
            for i in range(per):
                await stub.put(i, v)

        t = time.perf_counter()
        await asyncio.gather(*(caller(s) for s in stubs))
        dt = time.perf_counter() - t
    finally:
        await app.close()
    return per * objects / dt


def disk_per_million(root: pathlib.Path, n: int) -> dict[str, float]:
    path = root / "disk.sqlite"
    db = ObjectDatabase(path, history=HistoryOptions())
    vals = [os.urandom(100) for _ in range(256)]
    for i in range(1000):  # the keys exist first: the measured writes are updates
        db.kv_put(f"k{i}", vals[i % 256])
    db.commit()
    start = history_path(path).stat().st_size
    for i in range(n):
        db.kv_put(f"k{(i * 7919) % 1000}", vals[i % 256])
        db.commit()
    size = history_path(path).stat().st_size - start
    db_size = path.stat().st_size + (pathlib.Path(str(path) + "-wal").stat().st_size
                                     if pathlib.Path(str(path) + "-wal").exists() else 0)
    db.close()
    return {"writes_measured": n, "history_bytes": size, "bytes_per_write": size / n,
            "gb_per_million_writes_extrapolated": size / n * 1e6 / 1e9, "db_bytes": db_size}


def restore_one_hour_back(root: pathlib.Path, mb: int, writes: int) -> dict[str, float]:
    path = root / "big.sqlite"
    clock = FakeClock(1_700_000_000_000)
    opts = HistoryOptions(now_ms=clock)
    db = ObjectDatabase(path, history=opts)
    db.sql.exec("CREATE TABLE rows (id INTEGER PRIMARY KEY, v BLOB)")
    t = time.perf_counter()
    row = 1000
    for batch in range(mb):
        for i in range(1024 * 1024 // row):
            db.sql.exec("INSERT INTO rows (v) VALUES (?)", os.urandom(row))
        db.commit()
    build_s = time.perf_counter() - t
    size_mb = db.database_size / 1e6
    vals = [os.urandom(100) for _ in range(256)]
    step = 2 * 3_600_000 // writes  # the traffic spans two hours of fake time
    t = time.perf_counter()
    for i in range(writes):
        clock.ms += step
        db.kv_put(f"k{i % 1000}", vals[i % 256])
        if i % 10 == 0:
            db.sql.exec("UPDATE rows SET v = ? WHERE id = ?", os.urandom(row), (i * 7919) % 100_000 + 1)
        db.commit()
    traffic_s = time.perf_counter() - t
    db.close()
    hist_mb = history_path(path).stat().st_size / 1e6
    target = H.bookmark_for_time(path, clock.ms - 3_600_000, options=opts)
    t = time.perf_counter()
    H.restore(path, target, options=opts)
    restore_s = time.perf_counter() - t
    db = ObjectDatabase(path)
    check = db.kv_get("k0") is not None and db.database_size > 0
    db.close()
    return {"db_mb": size_mb, "history_mb": hist_mb, "records_after_target": writes // 2,
            "build_s": build_s, "traffic_s": traffic_s, "restore_s": restore_s, "restored_ok": check}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n_storage, n_runtime, n_disk, mb, writes = (
        (5_000, 5_000, 5_000, 10, 7_200) if args.quick else (40_000, 20_000, 100_000, 100, 72_000))
    root = pathlib.Path(tempfile.mkdtemp(prefix="duro-bench-history-"))
    out: dict[str, object] = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    try:
        off = [storage_throughput(root, n_storage, False) for _ in range(2)]
        on = [storage_throughput(root, n_storage, True) for _ in range(2)]
        out["storage_commits_per_s"] = {"off": max(off), "on": max(on), "cost_pct": 100 * (1 - max(on) / max(off))}
        print(f"storage, 1 put/commit, no fsync: off {max(off):,.0f}/s  on {max(on):,.0f}/s  "
              f"cost {out['storage_commits_per_s']['cost_pct']:.1f} %")
        rounds = []
        for r in range(3):  # alternating off/on: the machine is shared, single runs are noisy
            r_off = asyncio.run(runtime_throughput(root / f"r{r}", n_runtime, False))
            r_on = asyncio.run(runtime_throughput(root / f"r{r}", n_runtime, True))
            rounds.append((r_off, r_on, 100 * (1 - r_on / r_off)))
        med = sorted(rounds, key=lambda x: x[2])[1]
        out["runtime_puts_per_s"] = {"rounds": rounds, "median_round": med, "cost_pct_median": med[2]}
        print("runtime, fsync, 64 objects x 64 callers, 3 rounds: "
              + "; ".join(f"off {a:,.0f}/s on {b:,.0f}/s ({c:.1f} %)" for a, b, c in rounds)
              + f"  -> median cost {med[2]:.1f} %")
        disk = disk_per_million(root, n_disk)
        out["disk"] = disk
        print(f"disk: {disk['bytes_per_write']:.0f} B of history per small write; "
              f"{disk['gb_per_million_writes_extrapolated']:.2f} GB per million writes "
              f"(extrapolated from {n_disk:,})")
        rest = restore_one_hour_back(root, mb, writes)
        out["restore"] = rest
        print(f"restore: {rest['db_mb']:.0f} MB object, history {rest['history_mb']:.0f} MB, one hour back "
              f"({rest['records_after_target']:,} commits later): {rest['restore_s']:.2f} s "
              f"(ok={rest['restored_ok']})")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / ("history-quick.json" if args.quick else "history.json")).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
