"""Pending I/O keeps an object alive (Cloudflare's default from compatibility date 2026-10-01):
``ctx.waitUntil`` work and outgoing RPC calls hold an otherwise idle object in memory, each for at
most 15 minutes after it started; the flag ``durable_object_io_tasks_do_not_prevent_eviction``
turns that off. The sweeper is driven with explicit monotonic times; the runtime, its objects and
their SQLite files are real."""

import asyncio
import json
import pathlib
import shutil
import time

import pytest

from duro.compat.project import runtime_limits
from duro.config import load_project
from duro.runtime import RuntimeLimits
from duro.testing import LocalApp

PROJECT = pathlib.Path(__file__).parent / "projects" / "api2026"
IDLE = RuntimeLimits().idle_timeout  # 70 s


@pytest.fixture
async def app(tmp_path):
    async with LocalApp(PROJECT, tmp_path / "data", durability="os") as local:
        yield local


def _act(app, ns, name):
    return app.runtime.find(ns.unique_key, str(ns.idFromName(name)))


async def test_wait_until_work_keeps_the_object_for_at_most_15_minutes(app):
    ns = app.env.NOTES
    stub = ns.getByName("busy")
    await stub.background(3600)  # an hour of pending work
    act = _act(app, ns, "busy")
    (work,) = act._io_started
    t0 = time.monotonic()
    assert app.runtime.sweep(t0 + IDLE + 5) == 0  # idle, but its work is pending: kept
    assert _act(app, ns, "busy") is act
    assert app.runtime.sweep(t0 + 14 * 60) == 0
    assert app.runtime.sweep(t0 + 15 * 60 + 1) == 1  # the protection ends 15 minutes after it started
    assert _act(app, ns, "busy") is None
    await asyncio.wait([work], timeout=5)
    assert work.cancelled()  # the pending work ended with the instance
    assert await stub.whoami()  # the next event builds a new instance


async def test_outgoing_rpc_keeps_the_caller(app):
    ns = app.env.NOTES
    await ns.getByName("caller").call_slow("sleeper", 3600)
    caller = _act(app, ns, "caller")
    t0 = time.monotonic()
    assert app.runtime.sweep(t0 + IDLE + 5) == 0
    assert _act(app, ns, "caller") is caller
    # The callee is busy (an event in flight), so only the caller's 15 minutes can run out.
    assert app.runtime.sweep(t0 + 15 * 60 + 1) == 1
    assert _act(app, ns, "caller") is None
    assert app.runtime.find(app.env.OTHER.unique_key, str(app.env.OTHER.idFromName("sleeper"))) is not None


async def test_finished_work_no_longer_holds(app):
    ns = app.env.NOTES
    stub = ns.getByName("quick")
    await stub.background(0)
    act = _act(app, ns, "quick")
    for _ in range(100):
        if not act._tasks:
            break
        await asyncio.sleep(0.01)
    assert app.runtime.sweep(time.monotonic() + IDLE + 1) == 1


async def test_opt_out_flag_lets_the_idle_object_go(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project)
    wrangler = project / "wrangler.jsonc"
    data = json.loads("\n".join(line for line in wrangler.read_text().splitlines() if not line.startswith("//")))
    data["compatibility_flags"] = ["python_workers", "durable_object_io_tasks_do_not_prevent_eviction"]
    wrangler.write_text(json.dumps(data))
    assert runtime_limits(load_project(project)).io_keepalive == 0
    assert runtime_limits(load_project(PROJECT)).io_keepalive == 15 * 60
    async with LocalApp(project, tmp_path / "data", durability="os") as app:
        ns = app.env.NOTES
        await ns.getByName("busy").background(3600)
        t0 = time.monotonic()
        assert app.runtime.sweep(t0 + IDLE + 1) == 1  # evicted at the idle timeout, work or not
        assert _act(app, ns, "busy") is None
