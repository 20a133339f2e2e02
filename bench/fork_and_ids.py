"""What a fork costs and what jurisdictions add to ID parsing.

    python bench/fork_and_ids.py 10 100     # object sizes in MiB

For each size: an object is filled with 1 MiB rows (LocalApp, real SQLite files, fsync
durability); then the time of ``snapshot()``, of ``onNextSessionRestore()`` + ``abort()`` in another
object, and of that object's first call (the restore is applied before its constructor). Then
``id_from_string`` on the top-level namespace for IDs of three jurisdictions (each jurisdiction
tried costs one HMAC)."""
import asyncio, pathlib, sys, tempfile, time, timeit
from duro.testing import LocalApp
from duro.ids import NamespaceKey

PROJECT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "integration" / "projects" / "api2026"

async def main(mb):
    with tempfile.TemporaryDirectory() as d:
        async with LocalApp(PROJECT, pathlib.Path(d) / "data") as app:
            ns = app.env.NOTES
            src = ns.getByName("big")
            act = app.runtime.activation(ns.unique_key, ns.idFromName("big"))
            async def fill(inst):
                sql = inst.ctx.storage.sql
                for i in range(mb):
                    sql.exec("INSERT INTO notes VALUES (?)", "x" * (1 << 20))
            await act.run(fill)
            t0 = time.perf_counter(); snap = await src.snapshot(); t1 = time.perf_counter()
            try:
                await ns.getByName("copy").restore_from(snap)
            except Exception:
                pass
            t2 = time.perf_counter(); n = len(await ns.getByName("copy").notes()); t3 = time.perf_counter()
            print(f"{mb} MB: snapshot() {1000*(t1-t0):.0f} ms; onNextSessionRestore+abort {1000*(t2-t1):.0f} ms; "
                  f"first call on the fork (restore applied) {1000*(t3-t2):.0f} ms; rows {n}")

for mb in map(int, sys.argv[1:]):
    asyncio.run(main(mb))
k = NamespaceKey("app-Notes")
plain, eu, fh = str(k.id_from_name("x")), str(k.for_jurisdiction("eu").id_from_name("x")), str(k.for_jurisdiction("fedramp-high").id_from_name("x"))
for label, s in (("unrestricted", plain), ("eu", eu), ("fedramp-high", fh)):
    n = 100000
    t = timeit.timeit(lambda: k.id_from_string(s), number=n)
    print(f"id_from_string on the top-level namespace, {label} ID: {1e6*t/n:.2f} µs")
