"""Lifecycle: the bound on open databases, durability modes, files left on disk."""

import asyncio
import os

from duro.runtime import RuntimeLimits
from duro.testing import LocalApp

from .conftest import PROJECTS


async def test_open_databases_are_bounded(tmp_path):
    limits = RuntimeLimits(max_open_databases=5)
    async with LocalApp(PROJECTS / "gates", tmp_path / "d", limits=limits) as app:
        for i in range(30):
            assert await app.env.PROBE.get_by_name(f"o{i}").rmw() == 1
            assert app.runtime.statistics()["open_databases"] <= 6
        # Every object's data is still there after its database was closed.
        values = await asyncio.gather(*(app.env.PROBE.get_by_name(f"o{i}").get_n() for i in range(30)))
        assert values == [1] * 30


async def test_a_burst_of_objects_used_once_does_not_push_out_the_working_set(tmp_path):
    # Ten objects in use, then 60 new ones used once each (new users, alarms waking closed
    # objects): the bound of 20 closes the new ones, not the ten, which never open again.
    limits = RuntimeLimits(max_open_databases=20)
    async with LocalApp(PROJECTS / "gates", tmp_path / "d", limits=limits) as app:
        ns = app.env.PROBE
        working = [f"w{i}" for i in range(10)]
        for _ in range(3):
            for name in working:
                await ns.get_by_name(name).rmw()
        before = {name: app.runtime.find(ns.unique_key, str(ns.idFromName(name))) for name in working}
        for i in range(60):
            assert await ns.get_by_name(f"new{i}").rmw() == 1
        assert app.runtime.statistics()["open_databases"] <= 21
        for name in working:
            assert app.runtime.find(ns.unique_key, str(ns.idFromName(name))) is before[name], name
            assert before[name].db.is_open, name
        assert [await ns.get_by_name(name).get_n() for name in working] == [3] * 10
        # Objects used again are bounded too: 40 of them, each used twice, past the bound.
        for i in range(40):
            await ns.get_by_name(f"new{i}").get_n()
            await ns.get_by_name(f"new{i}").get_n()
            assert app.runtime.statistics()["open_databases"] <= 21
        assert [await ns.get_by_name(f"new{i}").get_n() for i in range(60)] == [1] * 60


async def test_eviction_closes_what_the_bound_needs_at_once_and_the_rest_in_later_turns(tmp_path):
    # Closing a whole batch (10 % of the bound) in one go held the loop for 40-55 ms at the
    # default bound of 2,000; only what lets the new object open is closed in its turn.
    from duro.runtime import catalog
    limits = RuntimeLimits(max_open_databases=100)
    async with LocalApp(PROJECTS / "gates", tmp_path / "d", limits=limits) as app:
        ns = app.env.PROBE
        for start in range(0, 100, 20):
            await asyncio.gather(*(ns.get_by_name(f"o{i}").rmw() for i in range(start, start + 20)))
        rt = app.runtime
        assert rt.statistics()["open_databases"] == 100
        closes = []
        real_close = catalog.Activation.close

        def counting_close(act, reason):
            closes.append(act)
            return real_close(act, reason)

        catalog.Activation.close = counting_close
        try:
            rt.activation(ns.unique_key, ns.idFromName("new"))  # the 101st: the bound needs one closed
            assert len(closes) == 1, len(closes)
            assert len(rt._evict_queue) == 9  # down to 90 %: nine more, a few per turn of the loop
            await asyncio.sleep(0)
            assert 1 < len(closes) < 10
            for _ in range(10):
                await asyncio.sleep(0)
            assert len(closes) == 10 and not rt._evict_queue
        finally:
            catalog.Activation.close = real_close
        assert await ns.get_by_name("new").rmw() == 1
        assert await asyncio.gather(*(ns.get_by_name(f"o{i}").get_n() for i in range(100))) == [1] * 100


async def test_a_database_past_the_bound_is_refused_while_all_open_ones_are_busy(tmp_path):
    # The bound is what keeps descriptors for storage: past it, an object that would need a new
    # database is refused as overloaded (the front answers 503) instead of opening one.
    from duro.errors import OverloadedError
    limits = RuntimeLimits(max_open_databases=3)
    async with LocalApp(PROJECTS / "gates", tmp_path / "d", limits=limits) as app:
        ceiling = app.runtime.open_database_ceiling  # the bound plus a burst allowance
        assert ceiling > 3
        busy = [asyncio.ensure_future(app.env.PROBE.get_by_name(f"b{i}").critical(0.3)) for i in range(ceiling)]
        await asyncio.sleep(0.05)
        try:
            await app.env.PROBE.get_by_name("fourth").rmw()
        except OverloadedError as e:
            assert e.overloaded and "max_open_databases" in str(e)
        else:
            raise AssertionError("a database past the ceiling was opened while all the others were busy")
        assert await asyncio.gather(*busy) == ["done"] * ceiling
        assert await app.env.PROBE.get_by_name("fourth").rmw() == 1
        assert await app.env.PROBE.get_by_name("fourth").get_n() == 1  # the refused call wrote nothing


async def test_os_durability_mode_skips_fsync_but_keeps_data(tmp_path):
    async with LocalApp(PROJECTS / "gates", tmp_path / "d", durability="os") as app:
        assert await app.env.PROBE.get_by_name("x").rmw() == 1
        assert app.runtime.barrier.statistics()["flushes"] == 0
    async with LocalApp(PROJECTS / "gates", tmp_path / "d", durability="fsync") as app:
        assert await app.env.PROBE.get_by_name("x").rmw() == 2
        assert app.runtime.barrier.statistics()["flushes"] >= 1


async def test_group_commit_shares_fsyncs_across_objects(tmp_path):
    async with LocalApp(PROJECTS / "gates", tmp_path / "d") as app:
        await asyncio.gather(*(app.env.PROBE.get_by_name(f"g{i}").rmw() for i in range(200)))
        stats = app.runtime.barrier.statistics()
        assert stats["commits"] >= 200
        assert stats["flushes"] < stats["commits"] / 4, stats


async def test_reading_objects_leave_no_files(tmp_path):
    async with LocalApp(PROJECTS / "gates", tmp_path / "d") as app:
        for i in range(5):
            assert await app.env.PROBE.get_by_name(f"r{i}").get_n() is None
        await app.env.PROBE.get_by_name("w").rmw()
    files = sorted((tmp_path / "d").rglob("*.sqlite*"))
    # The writer's database and its -wal, kept empty for the next open (opening.py). Nothing of
    # the readers, no -shm.
    assert [f.name.rsplit(".", 1)[1] for f in files] == ["sqlite", "sqlite-wal"], files
    assert files[1].stat().st_size == 0


_LOW_FD_SCRIPT = """
import asyncio, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300))
from duro.testing import LocalApp

async def main():
    async with LocalApp(sys.argv[1], sys.argv[2]) as app:
        for start in range(0, 200, 25):  # 25 in flight; 200 objects open would need 1,000 files
            await asyncio.gather(*(app.env.PROBE.get_by_name(f"o{i}").rmw() for i in range(start, start + 25)))
        values = await asyncio.gather(*(app.env.PROBE.get_by_name(f"o{i}").get_n() for i in range(200)))
        assert values == [1] * 200, values
        print("bound", app.runtime.max_open_databases, "open", app.runtime.statistics()["open_databases"])

asyncio.run(main())
"""


def test_the_open_file_limit_bounds_open_databases(tmp_path):
    """With 300 files allowed, 2,000 open databases (four files each) would fail with EMFILE: the
    runtime lowers its bound instead, says so, and every object keeps working."""
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-c", _LOW_FD_SCRIPT, str(PROJECTS / "gates"), str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[:2] == ["bound", "16"], proc.stdout
    assert "open-file limit (300) holds only 16 open databases" in proc.stderr


async def test_an_open_journaled_object_holds_three_descriptors(tmp_path):
    """Its database, -wal and history; no -shm (it takes no locks: storage/opening.py), and the
    WAL reader reads through SQLite's own descriptor. The open-database bound counts three."""
    async with LocalApp(PROJECTS / "gates", tmp_path / "d") as app:
        stub = app.env.PROBE.get_by_name("fds")
        await stub.rmw()
        path = app.runtime.db_path(app.env.PROBE.unique_key, app.env.PROBE.idFromName("fds"))
        held = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith(str(path.with_suffix(""))):
                held.append(target.rsplit(".", 1)[1])
        assert sorted(held) == ["history", "sqlite", "sqlite-wal"], held
        assert app.runtime.fds_per_database == 3


async def test_an_idle_open_object_gives_back_the_descriptors_duro_holds(tmp_path):
    import time as _time
    async with LocalApp(PROJECTS / "gates", tmp_path / "d") as app:
        stub = app.env.PROBE.get_by_name("idle-fds")
        await stub.rmw()
        before = len(os.listdir("/proc/self/fd"))
        app.runtime.sweep(now=_time.monotonic() + 6)  # idle past FD_IDLE_SECONDS, not evicted
        assert app.runtime.find(*next(iter(app.runtime._activations))) is not None
        assert len(os.listdir("/proc/self/fd")) == before - 1  # the history file (the WAL reader uses SQLite's)
        await stub.rmw()  # the next commit opens them again and its history goes on
        assert await stub.get_n() == 2
        assert len(os.listdir("/proc/self/fd")) == before
