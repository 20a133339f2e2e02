"""Reads of an open object from outside its connection (the dashboard, ``duro objects``) while it
writes fast: the object's connection takes no locks (opening.py), its WAL is checkpointed into
the file and starts over again and again, and every outside read still sees one state of it —
the two accounts' sum never differs from the total (maintenance._read_consistently)."""

import asyncio
import pathlib
import threading

from duro.storage import maintenance
from duro.testing import LocalApp

PROJECT = pathlib.Path(__file__).parent / "projects" / "outside_reads"
TOTAL = 1000


async def test_reads_from_outside_see_one_state_while_the_wal_starts_over(tmp_path):
    async with LocalApp(PROJECT, tmp_path / "data") as app:
        ns = app.env.LEDGER
        stub = ns.get(ns.idFromName("busy"))
        await stub.churn(1)
        path = app.runtime.db_path(ns.unique_key, ns.idFromName("busy"))
        wal = pathlib.Path(str(path) + "-wal")
        stop = threading.Event()
        seen: list[tuple[int, int]] = []
        errors: list[str] = []

        def reader() -> None:
            while not stop.is_set():
                try:
                    res = maintenance.run_sql(path, "SELECT sum(v), count(*) FROM acct")
                except Exception as e:  # noqa: BLE001 - every failure is reported below
                    errors.append(f"{type(e).__name__}: {e}")
                    continue
                seen.append(res.rows[0])

        restarts = 0
        headers = set()
        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for _ in range(30):  # 30 x 10 commits of ~100 pages: the WAL starts over many times
                await stub.churn(10)
                try:
                    headers.add(wal.read_bytes()[:32])
                except FileNotFoundError:
                    pass
                await asyncio.sleep(0)
        finally:
            stop.set()
            await asyncio.to_thread(thread.join, 30)
        restarts = len(headers)
    assert restarts >= 3, "the WAL never started over: the test proves nothing"
    assert len(seen) >= 20, (len(seen), errors[:3])
    wrong = [row for row in seen if row != (TOTAL, 2)]
    assert not wrong, f"{len(wrong)} of {len(seen)} outside reads saw no single state: {wrong[:5]}"
    assert not [e for e in errors if "changed under every one" not in e], errors[:5]
