"""storage/maintenance.py: offline inspection, SQL, export and import of one object's database."""

from __future__ import annotations

import apsw
import pytest

from duro.errors import InvalidInputError
from duro.storage import ObjectDatabase, maintenance


@pytest.fixture
def obj(tmp_path):
    db = ObjectDatabase(tmp_path / "o.sqlite", name="alice")
    db.sql.exec("CREATE TABLE t (x)")
    db.sql.exec("INSERT INTO t VALUES (1), (2)")
    db.kv.put("k", "v")
    db.set_alarm(4_102_444_800_000)
    db.commit()
    db.close()
    return tmp_path / "o.sqlite"


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_summarize_reads_without_creating_files(obj):
    before = names(obj.parent)
    s = maintenance.summarize(obj, detail=True)
    assert (s.name, s.alarm_ms, s.tables, s.kv_keys) == ("alice", 4_102_444_800_000, (("t", 2),), 1)
    assert names(obj.parent) == before


def test_a_read_that_races_a_writer_is_done_again(obj):
    calls = []

    def read(conn):
        calls.append(1)
        value = conn.execute("SELECT count(*) FROM t").fetchall()[0][0]
        if len(calls) == 1:  # a server opens the object and writes meanwhile
            writer = apsw.Connection(str(obj))
            writer.execute("INSERT INTO t VALUES (3)")
            read.writer = writer  # kept open: its -wal stays
        return value

    assert maintenance._read_consistently(obj, read) == 3
    assert len(calls) == 2
    read.writer.close()


def test_read_only_sql_refuses_to_write(obj):
    with pytest.raises(InvalidInputError, match="--write"):
        maintenance.run_sql(obj, "DELETE FROM t")
    assert maintenance.run_sql(obj, "SELECT count(*) AS n FROM t").rows == [(2,)]
    res = maintenance.run_sql(obj, "DELETE FROM t WHERE x = ?", [1], write=True)
    assert res.changes == 1
    with pytest.raises(InvalidInputError, match="SQL error"):
        maintenance.run_sql(obj, "INSERT INTO t VALUES (9); INSERT INTO nope VALUES (1)", write=True)
    assert maintenance.run_sql(obj, "SELECT x FROM t").rows == [(2,)]  # rolled back as a whole


def test_export_then_import_under_a_new_name(obj, tmp_path):
    out = tmp_path / "copy.sqlite"
    maintenance.export_database(obj, out)
    conn = apsw.Connection(str(out), flags=apsw.SQLITE_OPEN_READONLY)
    assert conn.execute("PRAGMA journal_mode").fetchall() == [("delete",)]
    conn.close()
    dst = tmp_path / "do" / "ns" / "b.sqlite"
    maintenance.import_database(out, dst, name="bob")
    s = maintenance.summarize(dst, detail=True)
    assert (s.name, s.tables, s.kv_keys) == ("bob", (("t", 2),), 1)
    db = ObjectDatabase(dst)  # the runtime opens it as usual
    assert db.kv.get("k") == "v"
    db.close()


def test_import_refuses_what_is_not_sqlite_and_changes_nothing(obj, tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello")
    before = obj.read_bytes()
    with pytest.raises(InvalidInputError, match="not a SQLite database"):
        maintenance.import_database(junk, obj, name="x")
    assert obj.read_bytes() == before
