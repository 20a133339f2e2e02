"""Jurisdictions (Cloudflare 2026): ``ns.jurisdiction(j)``, ``newUniqueId({"jurisdiction": j})`` and
``ctx.id.jurisdiction``, on a real runtime with real SQLite files. The jurisdiction is part of the
ID: it survives ``toString()``/``idFromString()`` (even on the unrestricted namespace) and reaches
the object in alarms."""

import pathlib

import pytest

from duro.clock import VirtualClock
from duro.core.lifecycle import DeactivationReason
from duro.errors import InvalidIdError, InvalidInputError
from duro.testing import LocalApp

PROJECT = pathlib.Path(__file__).parent / "projects" / "api2026"


@pytest.fixture
async def app(tmp_path):
    async with LocalApp(PROJECT, tmp_path / "data", clock=VirtualClock(), durability="os") as local:
        yield local


async def test_jurisdiction_is_part_of_the_id_and_seen_inside_the_object(app):
    ns = app.env.NOTES
    eu = ns.jurisdiction("eu")
    plain_id, eu_id = ns.idFromName("x"), eu.idFromName("x")
    assert str(plain_id) != str(eu_id)  # different objects, as on Cloudflare
    assert (plain_id.jurisdiction, eu_id.jurisdiction) == (None, "eu")
    assert await eu.getByName("x").whoami() == {"id": str(eu_id), "name": "x", "jurisdiction": "eu"}
    assert (await ns.getByName("x").whoami())["jurisdiction"] is None
    await eu.getByName("x").add("in the eu")
    assert await ns.getByName("x").notes() == []  # the unrestricted "x" is another object

    # toString() keeps the jurisdiction; the unrestricted binding accepts it and reaches the same object.
    back = ns.idFromString(eu_id.toString())
    assert back.jurisdiction == "eu" and back.name is None and back == eu_id
    assert await ns.get(back).notes() == ["in the eu"]


async def test_new_unique_id_in_a_jurisdiction(app):
    ns = app.env.NOTES
    uid = ns.newUniqueId({"jurisdiction": "us"})
    assert uid.jurisdiction == "us" and uid.name is None
    assert (await ns.get(uid).whoami())["jurisdiction"] == "us"
    assert ns.jurisdiction("us").newUniqueId().jurisdiction == "us"
    assert ns.newUniqueId().jurisdiction is None
    assert ns.newUniqueId({"jurisdiction": None}).jurisdiction is None


async def test_subnamespace_refuses_ids_of_another_jurisdiction(app):
    ns = app.env.NOTES
    eu_id = ns.jurisdiction("eu").idFromName("y")
    with pytest.raises(TypeError, match="^get called on jurisdictional subnamespace with an ID from a "
                                        "different jurisdiction$"):
        ns.jurisdiction("us").get(eu_id)
    with pytest.raises(TypeError, match="^get called on jurisdictional subnamespace"):
        ns.jurisdiction("eu").get(ns.idFromName("y"))
    with pytest.raises(TypeError, match="cannot make an ID in jurisdiction 'us'"):
        ns.jurisdiction("eu").newUniqueId({"jurisdiction": "us"})
    assert ns.jurisdiction(None) is ns


async def test_unknown_jurisdiction_is_named_in_the_error(app):
    ns = app.env.NOTES
    with pytest.raises(InvalidInputError, match="Unknown jurisdiction 'mars': expected one of eu, us, fedramp, "
                                                "fedramp-high"):
        ns.jurisdiction("mars")
    with pytest.raises(InvalidInputError, match="'mars'"):
        ns.newUniqueId({"jurisdiction": "mars"})
    # An ID of another namespace is still refused, whatever jurisdiction it was minted in.
    with pytest.raises(InvalidIdError, match="not valid for this namespace"):
        ns.idFromString(str(app.env.OTHER.jurisdiction("eu").idFromName("z")))


async def test_alarm_sees_the_jurisdiction(app):
    ns = app.env.NOTES
    stub = ns.jurisdiction("fedramp").getByName("alarmed")
    await stub.arm(app.runtime.clock.now_ms() + 1000)
    act = app.runtime.find(ns.unique_key, str(stub.id))
    act.close(DeactivationReason.IDLE)
    app.runtime.forget(act)  # the alarm builds a new instance from the ID string alone
    await app.advance(2)
    assert await stub.alarm_saw() == {"jurisdiction": "fedramp", "name": "alarmed"}
