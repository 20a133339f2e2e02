"""Snapshot and restore ("fork", Cloudflare 2026-09-23) on a real runtime with real SQLite files:
``ctx.storage.snapshot()`` in one object, returned over RPC, ``ctx.onNextSessionRestore(snap)`` +
``ctx.abort(reason)`` in another, which then starts over the source's data (SQL and KV), without
the source's alarm or identity; the undo bookmark puts the destination back; a snapshot cannot
be stored."""

import pathlib

import pytest

from duro.clock import VirtualClock
from duro.codec import DataCloneError
from duro.testing import LocalApp

PROJECT = pathlib.Path(__file__).parent / "projects" / "api2026"
REASON = "restoring from a snapshot"


@pytest.fixture
async def app(tmp_path):
    async with LocalApp(PROJECT, tmp_path / "data", clock=VirtualClock(), durability="os") as local:
        yield local


async def test_fork_starts_another_object_from_the_snapshot(app):
    ns = app.env.NOTES
    src, dst = ns.getByName("source"), ns.getByName("fork")
    await src.add("one")
    await src.add("two")
    await src.arm(app.runtime.clock.now_ms() + 3_600_000)  # the source's alarm is not copied
    await dst.add("the fork's own note")
    snap = await src.snapshot()
    assert type(snap).__name__ == "DurableObjectSnapshot"
    await src.add("three")  # after the snapshot: not in it

    with pytest.raises(Exception) as info:
        await dst.restore_from(snap)
    assert str(info.value) == REASON  # the caller sees the abort reason as the message
    dst = ns.getByName("fork")  # the stub that saw the reset stays broken, as on Cloudflare

    assert await dst.notes() == ["one", "two"]  # SQL, replaced wholesale
    assert await dst.last() == "two"  # KV too
    assert (await dst.whoami())["name"] == "fork"  # identity is the destination's
    assert app.runtime.alarms.get_alarm(app.runtime.find(ns.unique_key, str(dst.id))) is None
    assert await src.notes() == ["one", "two", "three"]  # the source is untouched


async def test_undo_bookmark_puts_the_destination_back(app):
    ns = app.env.NOTES
    src, dst = ns.getByName("s"), ns.getByName("d")
    await src.add("from the source")
    await dst.add("before")
    snap = await src.snapshot()
    with pytest.raises(Exception, match=REASON):
        await dst.restore_and_tell(snap, "keeper")
    assert await ns.getByName("d").notes() == ["from the source"]
    undo = await ns.getByName("keeper").remembered()  # the state just before the restore
    with pytest.raises(Exception, match="undoing a restore"):
        await ns.getByName("d").undo_to(undo)
    assert await ns.getByName("d").notes() == ["before"]


async def test_snapshot_at_a_bookmark_and_across_namespaces(app):
    ns = app.env.NOTES
    src = ns.getByName("history")
    await src.add("old")
    bookmark = await src.bookmark()
    await src.add("new")
    snap = await src.snapshot(bookmark)
    dst = ns.getByName("from-bookmark")
    with pytest.raises(Exception, match=REASON):
        await dst.restore_from(snap)
    assert await ns.getByName("from-bookmark").notes() == ["old"]

    # The source may be of another class: its whole database replaces the destination's.
    other_snap = await app.env.OTHER.getByName("o").snapshot()
    dst2 = ns.getByName("from-other")
    with pytest.raises(Exception, match=REASON):
        await dst2.restore_from(other_snap)
    act = app.runtime.activation(ns.unique_key, ns.idFromName("from-other"))

    async def read(instance):
        return [r["x"] for r in instance.ctx.storage.sql.exec("SELECT x FROM t")]
    assert await act.run(read) == ["from other"]


async def test_snapshot_cannot_be_stored_or_cloned(app):
    import copy
    stub = app.env.NOTES.getByName("storer")
    with pytest.raises(DataCloneError, match="^DurableObjectSnapshots cannot be cloned or stored. They can only "
                                             "be transferred over RPC.$"):
        await stub.store_snapshot()
    snap = await stub.snapshot()
    with pytest.raises(DataCloneError, match="cannot be cloned or stored"):
        copy.deepcopy(snap)


async def test_restore_needs_a_snapshot(app):
    with pytest.raises(TypeError, match="onNextSessionRestore\\(\\) takes a DurableObjectSnapshot"):
        await app.env.NOTES.getByName("x").restore_from("not a snapshot")
