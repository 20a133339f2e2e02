"""Bad input is refused with a clear error and loses nothing; other objects keep working."""

import pytest

from duro.errors import CorruptDatabaseError, InvalidIdError, SqlError, StorageLimitError
from duro.storage.database import wait_closed


async def test_oversized_value_refused_nothing_stored(gates):
    stub = gates.env.PROBE.get_by_name("big")
    await stub.echo(1)
    with pytest.raises(StorageLimitError, match="string or blob too big: SQLITE_TOOBIG"):
        await _put(gates, "big", b"x" * 2_100_000)
    assert await stub.rmw() == 1  # still usable
    await _put(gates, "big", b"x" * 1_900_000)  # just under the limit is accepted


async def _put(app, name, value):
    act = app.runtime.activation(app.env.PROBE.unique_key, app.env.PROBE.id_from_name(name))

    async def event(instance):
        await instance.ctx.storage.put("v", value)
    await act.run(event)


async def test_malformed_ids_are_refused(gates):
    ns = gates.env.PROBE
    with pytest.raises(InvalidIdError, match="must be 64 hex digits"):
        ns.id_from_string("not-an-id")
    with pytest.raises(InvalidIdError, match="not valid for this namespace"):
        ns.id_from_string(str(gates.env.SLOW.id_from_name("x")))
    with pytest.raises(TypeError):
        ns.get("a-name-not-an-id")


async def test_forbidden_sql_is_refused(gates):
    ns = gates.env.PROBE
    act = gates.runtime.activation(ns.unique_key, ns.id_from_name("sql"))

    async def event(instance):
        sql = instance.ctx.storage.sql
        errors = []
        for q in ("BEGIN", "PRAGMA user_version", "ATTACH 'x' AS y", "SELECT * FROM _cf_KV", "SELECT sqlite_version()"):
            try:
                sql.exec(q)
            except SqlError as e:
                errors.append(str(e))
        sql.exec("CREATE TABLE ok(x)")
        return errors
    errors = await act.run(event)
    assert len(errors) == 5 and all(errors)
    assert errors[0].startswith("To execute a transaction, please use the state.storage.transaction()")
    assert "SQLITE_AUTH" in errors[1]


async def test_corrupt_database_fails_that_object_only(gates):
    ns = gates.env.PROBE
    victim = ns.get_by_name("victim")
    assert await victim.rmw() == 1
    path = gates.runtime.db_path(ns.unique_key, ns.id_from_name("victim"))
    gates.runtime.sweep(now=10**12)  # evict so the file is closed
    wait_closed(path)  # eviction finishes the close (its fsyncs) on a worker thread
    assert path.exists()
    for suffix in ("-wal", "-shm"):
        pathlib_path = path.with_name(path.name + suffix)
        if pathlib_path.exists():
            pathlib_path.unlink()
    path.write_bytes(b"this is not a database" * 1000)
    with pytest.raises(CorruptDatabaseError) as info:
        await ns.get_by_name("victim").get_n()
    assert str(path) in str(info.value) or path.name in str(info.value)
    assert await ns.get_by_name("healthy").rmw() == 1
    with pytest.raises(CorruptDatabaseError):
        await ns.get_by_name("victim").rmw()
