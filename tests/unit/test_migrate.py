"""storage/migrate.py on real directories, real object databases and a real alarm index: renames,
transfers and deletes move or remove every file of a namespace and its alarm rows, IDs stay
valid, each tag runs once, and a record the config does not explain is refused."""

from __future__ import annotations

import json

import pytest

from duro.errors import ConfigError, StorageError
from duro.ids import NamespaceKey
from duro.storage import migrate
from duro.storage.alarm_index import AlarmIndex, IndexRow
from duro.storage.database import ObjectDatabase
from duro.storage.journal import HistoryOptions
from duro.storage.migrate import Migration, Move, Plan


def make_object(data, ns, name, alarm=None):
    key = NamespaceKey(ns)
    hex_id = key.id_from_name(name).to_string()
    path = data / "do" / ns / f"{hex_id}.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    db = ObjectDatabase(path, name=name, history=HistoryOptions())
    db.kv_put("who", name)
    if alarm is not None:
        db.set_alarm(alarm)
    db.commit()
    db.close()
    if alarm is not None:
        index = AlarmIndex(data / "alarms.sqlite")
        index.apply([IndexRow(ns, hex_id, name, alarm)], [])
        index.close()
    return hex_id


def alarm_rows(data):
    index = AlarmIndex(data / "alarms.sqlite")
    try:
        return sorted((r.namespace, r.object_id) for r in index.load())
    finally:
        index.close()


RENAME = [Migration("v1", ()), Migration("v2", (Move("rename", "shop-Counter", "shop-Tally", "rename Counter"),))]
TAGS = ["v1", "v2"]


def plan(migrations, tags, script="shop"):
    return Plan(script, tuple(migrations), tuple(tags))


def test_rename_moves_databases_history_and_alarms_and_keeps_ids(tmp_path):
    a = make_object(tmp_path, "shop-Counter", "apples", alarm=1_900_000_000_000)
    b = make_object(tmp_path, "shop-Counter", "pears")
    history = (tmp_path / "do" / "shop-Counter" / f"{a}.history").read_bytes()
    assert history
    done = migrate.apply(tmp_path, plan(RENAME, TAGS))
    assert [(c.move.kind, c.objects, c.done, c.alarms) for c in done] == [("rename", 2, True, 1)]
    assert not (tmp_path / "do" / "shop-Counter").exists()
    moved = tmp_path / "do" / "shop-Tally"
    assert sorted(p.name for p in moved.glob("*.sqlite")) == sorted([f"{a}.sqlite", f"{b}.sqlite"])
    assert (moved / f"{a}.history").read_bytes() == history
    db = ObjectDatabase(moved / f"{a}.sqlite")
    assert db.kv_get("who") == "apples" and db.get_alarm() == 1_900_000_000_000
    db.close()
    assert alarm_rows(tmp_path) == [("shop-Tally", a)]
    # The renamed namespace keeps minting the IDs its objects have.
    key = NamespaceKey("shop-Tally", id_key=migrate.id_key(moved))
    assert key.id_from_name("apples").to_string() == a
    assert key.is_valid(b)
    assert not NamespaceKey("shop-Tally").is_valid(a)
    assert migrate.applied_tags(tmp_path, "shop") == ["v1", "v2"]
    assert migrate.apply(tmp_path, plan(RENAME, TAGS)) == []  # once per tag


def test_a_chain_of_renames_keeps_the_first_key(tmp_path):
    a = make_object(tmp_path, "shop-A", "x")
    chain = [Migration("v1", (Move("rename", "shop-A", "shop-B"),)), Migration("v2", (Move("rename", "shop-B", "shop-C"),))]
    migrate.apply(tmp_path, plan(chain[:1], ["v1"]))
    migrate.apply(tmp_path, plan(chain, ["v1", "v2"]))
    folder = tmp_path / "do" / "shop-C"
    assert NamespaceKey("shop-C", id_key=migrate.id_key(folder)).id_from_name("x").to_string() == a


def test_transfer_takes_another_scripts_objects(tmp_path):
    a = make_object(tmp_path, "other-Room", "lobby", alarm=1_900_000_000_000)
    move = Move("transfer", "other-Room", "shop-Room", "transfer Room of other")
    migrate.apply(tmp_path, plan([Migration("t1", (move,))], ["t1"]))
    assert (tmp_path / "do" / "shop-Room" / f"{a}.sqlite").is_file()
    assert alarm_rows(tmp_path) == [("shop-Room", a)]


def test_delete_removes_every_file_and_alarm(tmp_path):
    make_object(tmp_path, "shop-Junk", "a", alarm=1_900_000_000_000)
    make_object(tmp_path, "shop-Junk", "b")
    keep = make_object(tmp_path, "shop-Counter", "c", alarm=1_900_000_000_000)
    steps = []
    done = migrate.apply(tmp_path, plan([Migration("v1", (Move("delete", "shop-Junk"),))], ["v1"]),
                         progress=lambda what, d, t: steps.append((what, d, t)))
    assert [(c.objects, c.alarms, c.done) for c in done] == [(2, 1, True)]
    assert not (tmp_path / "do" / "shop-Junk").exists()
    assert list((tmp_path / ".deleting").iterdir()) == []
    assert alarm_rows(tmp_path) == [("shop-Counter", keep)]
    assert steps and steps[-1][1] == steps[-1][2]


def test_an_interrupted_delete_is_finished(tmp_path):
    tomb = tmp_path / ".deleting" / "shop-Junk.1"
    tomb.mkdir(parents=True)
    (tomb / "x.sqlite").write_bytes(b"left behind")
    migrate.apply(tmp_path, plan([Migration("v1", (Move("delete", "shop-Junk"),))], ["v1"]))
    assert not tomb.exists()


def test_an_occupied_target_is_refused_and_nothing_moves(tmp_path):
    make_object(tmp_path, "shop-Counter", "apples")
    make_object(tmp_path, "shop-Tally", "already-here")
    with pytest.raises(ConfigError, match=r"shop-Tally already has stored objects \(1 in .*Nothing was moved"):
        migrate.apply(tmp_path, plan(RENAME, TAGS))
    assert len(list((tmp_path / "do" / "shop-Counter").glob("*.sqlite"))) == 1
    assert migrate.applied_tags(tmp_path, "shop") == ["v1"]  # v1 moves nothing; v2 stays to do


def test_unknown_and_out_of_order_tags_are_refused(tmp_path):
    migrate.apply(tmp_path, plan(RENAME, TAGS))
    with pytest.raises(ConfigError, match=r"tag 'v2' was applied to this data .* no longer lists it"):
        migrate.apply(tmp_path, plan(RENAME[:1], ["v1"]))
    inserted = [RENAME[0], Migration("v1b", ()), RENAME[1]]
    with pytest.raises(ConfigError, match=r"migration 'v1b' is listed before 'v2', which was applied already"):
        migrate.dry_run(tmp_path, plan(inserted, ["v1", "v1b", "v2"]))


def test_an_untagged_migration_that_moves_data_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="has no tag: give it one"):
        migrate.apply(tmp_path, plan([Migration(None, (Move("delete", "shop-Junk"),), "migrations[0]")], []))


def test_a_journal_holding_records_of_the_namespace_blocks_the_move(tmp_path):
    a = make_object(tmp_path, "shop-Counter", "apples")
    with pytest.raises(StorageError, match="node journal still holds records"):
        migrate.apply(tmp_path, plan(RENAME, TAGS), pending_keys=[f"do/shop-Counter/{a}.sqlite"])
    assert (tmp_path / "do" / "shop-Counter" / f"{a}.sqlite").is_file()


def files(root):
    """Every file and its bytes; SQLite's shared-memory index (-shm) and an empty -wal are no
    data, and a read-only reader of a WAL database may create them."""
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not p.name.endswith("-shm") and not (p.name.endswith("-wal") and not p.stat().st_size)}


def test_tags_are_kept_per_script(tmp_path):
    migrate.apply(tmp_path, plan(RENAME, TAGS))
    other = plan([Migration("t1", ())], ["t1"], script="other")
    assert migrate.pending(tmp_path, other) == [other.migrations[0]]  # shop's v1, v2 are not other's
    migrate.apply(tmp_path, other)
    assert migrate.applied_tags(tmp_path, "other") == ["t1"]
    assert migrate.applied_tags(tmp_path, "shop") == ["v1", "v2"]


def test_dry_run_changes_nothing(tmp_path):
    make_object(tmp_path, "shop-Counter", "apples", alarm=1_900_000_000_000)
    before = files(tmp_path)
    changes = migrate.dry_run(tmp_path, plan(RENAME, TAGS))
    assert [(c.tag, c.objects, c.alarms, c.done) for c in changes] == [("v2", 1, 1, False)]
    assert "rename shop-Counter -> shop-Tally: 1 object" in changes[0].describe()
    assert files(tmp_path) == before


def test_a_damaged_record_is_a_clear_error(tmp_path):
    (tmp_path / "migrations.json").write_text(json.dumps({"scripts": {"shop": ["v1"]}}))
    with pytest.raises(StorageError, match="is not a migrations record duro wrote"):
        migrate.applied_tags(tmp_path, "shop")
