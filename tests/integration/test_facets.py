"""Durable Object facets (Cloudflare 2026): child objects with their own SQLite inside a parent, on
a real runtime with real SQLite files. Each facet has its own database (mutually invisible), sees the
parent's ``ctx.id``, answers ``fetch`` and RPC; abort, delete and clone behave as on Cloudflare, with
its error texts; facets close with their parent and keep their data."""

import hashlib
import pathlib
import time

import pytest

from duro.codec import DataCloneError
from duro.testing import LocalApp

PROJECT = pathlib.Path(__file__).parent / "projects" / "api2026"


@pytest.fixture
async def app(tmp_path):
    async with LocalApp(PROJECT, tmp_path / "data", durability="os") as local:
        yield local


def facet_file(app, parent_name, facet):
    ns = app.env.NOTES
    parent = app.runtime.db_path(ns.unique_key, ns.idFromName(parent_name))
    return parent.with_suffix(".facets") / f"{hashlib.sha256(facet.encode()).hexdigest()[:32]}.sqlite"


async def test_facets_have_their_own_sqlite(app):
    p = app.env.NOTES.getByName("parent")
    await p.add("the parent's note")
    await p.facet_add("a", "in a")
    await p.facet_add("b", "in b")
    await p.facet_add("a", "again in a")
    assert await p.facet_items("a") == ["in a", "again in a"]
    assert await p.facet_items("b") == ["in b"]
    assert await p.notes() == ["the parent's note"]  # the parent's database has no facet tables
    assert await p.facet_call("a", "tables") == ["items"]  # nor a facet the parent's
    assert facet_file(app, "parent", "a").is_file() and facet_file(app, "parent", "b").is_file()
    # The facet's ctx.id is the parent's; it answers fetch too.
    assert await p.facet_call("a", "whoami") == {"id": str(p.id), "name": "parent"}
    assert await p.facet_fetch("a") == "facet http://facet/hello"


async def test_abort_breaks_old_stubs_and_keeps_storage(app):
    p = app.env.NOTES.getByName("aborting")
    await p.facet_add("f", "kept")
    assert await p.facet_abort_keeps_stub("f", "stop now") == "stop now"
    assert await p.facet_items("f") == ["kept"]  # a new get() starts it again over its storage


async def test_delete_erases_the_facet_and_its_facets(app):
    p = app.env.NOTES.getByName("deleting")
    await p.facet_add("f", "gone soon")
    assert await p.facet_call("f", "nest", 1) == []  # a facet of the facet
    inner = facet_file(app, "deleting", "f").with_suffix(".facets")
    assert any(inner.glob("*.sqlite"))
    assert await p.facet_delete("f") == "Facet was deleted."
    assert not facet_file(app, "deleting", "f").exists()
    assert not any(inner.glob("*.sqlite"))
    assert await p.facet_items("f") == []  # starts empty


async def test_clone_copies_a_facet(app):
    p = app.env.NOTES.getByName("cloning")
    await p.facet_add("src", "one")
    await p.facet_add("dst", "overwritten")
    await p.facet_clone("src", "dst")
    assert await p.facet_items("dst") == ["one"]
    await p.facet_add("src", "two")  # independent afterwards
    assert await p.facet_items("dst") == ["one"]
    await p.facet_clone("never-started", "dst")  # an empty facet clones as empty
    assert await p.facet_items("dst") == []


async def test_limits_and_errors_have_cloudflares_texts(app):
    p = app.env.NOTES.getByName("limits")
    with pytest.raises(RuntimeError, match="^Facets currently cannot set alarms.$"):
        await p.facet_call("f", "arm")
    with pytest.raises(TypeError, match=r"^Facet name is too long \(max 256 characters\).$"):
        await p.facet_long_name()
    with pytest.raises(Exception, match="acceptWebSocket\\(\\) is not available in a facet"):
        await p.facet_call("f", "hibernate_socket")
    with pytest.raises(DataCloneError, match="^Stubs pointing to Durable Object facets are not serializable.$"):
        await p.facet_stub("f")
    assert await p.facet_call("f", "nest", 2) == []  # depth 4 with the root: allowed
    with pytest.raises(RuntimeError, match="^Facet nesting depth limit exceeded. The maximum depth including "
                                           "the root Durable Object is 4.$"):
        await p.facet_call("f", "nest", 3)


async def test_facets_close_with_the_parent_and_keep_their_data(app):
    ns = app.env.NOTES
    p = ns.getByName("evicted")
    await p.facet_add("f", "durable")
    parent = app.runtime.find(ns.unique_key, str(p.id))
    facet = parent.ctx.facets.running("f")
    assert facet is not None
    assert app.runtime.sweep(time.monotonic() + 3600) == 1  # the parent goes, its facet with it
    assert facet.state.value == "closed"
    assert await ns.getByName("evicted").facet_items("f") == ["durable"]


async def test_a_busy_facet_keeps_its_parent(app):
    ns = app.env.NOTES
    p = ns.getByName("busy-facet")
    await p.facet_call("f", "background", 3600)  # the facet has pending work; the parent has none
    parent = app.runtime.find(ns.unique_key, str(p.id))
    t0 = time.monotonic()
    assert app.runtime.sweep(t0 + 75) == 0
    assert app.runtime.find(ns.unique_key, str(p.id)) is parent
    assert app.runtime.sweep(t0 + 15 * 60 + 1) == 1  # the facet's protection ran out: both go


async def test_cloudflare_spelling_with_ctx_exports(app):
    """As Cloudflare's Python code writes it: ``to_js({"class": self.ctx.exports.X}, ...)``."""
    p = app.env.NOTES.getByName("exports")
    assert await p.facet_via_exports("c", "Child", "items") == []  # an unbound class: the class itself
    assert await p.facet_via_exports("o", "Other", "snapshot") is not None  # a bound one: its namespace
    with pytest.raises(AttributeError, match="ctx.exports.Default: duro's ctx.exports gives the Durable Object "
                                             "classes"):
        await p.exports_missing()
