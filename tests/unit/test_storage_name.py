"""The object's name in ``_cf_METADATA`` key 3: written once by the first commit that writes and
leaves data, never by a read, and never counted as data."""

from __future__ import annotations

import apsw

from duro.storage import ObjectDatabase


def stored_name(path):
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        if not conn.table_exists("main", "_cf_METADATA"):
            return None
        rows = conn.execute("SELECT value FROM _cf_METADATA WHERE key = 3").fetchall()
        return rows[0][0] if rows else None
    finally:
        conn.close()


def test_first_write_commit_records_the_name(tmp_path):
    db = ObjectDatabase(tmp_path / "o.sqlite", name="alice")
    db.kv.put("k", 1)
    assert db.commit() is True
    assert stored_name(db.path) == "alice"
    db.close()
    assert db.path.exists()


def test_without_a_name_nothing_is_recorded(tmp_path):
    db = ObjectDatabase(tmp_path / "o.sqlite")
    db.kv.put("k", 1)
    db.commit()
    assert stored_name(db.path) is None
    db.close()


def test_a_read_only_transaction_stays_read_only(tmp_path):
    db = ObjectDatabase(tmp_path / "o.sqlite")
    db.sql.exec("CREATE TABLE t (x)")
    db.commit()
    db.close()
    db = ObjectDatabase(tmp_path / "o.sqlite", name="bob")
    db.sql.exec("SELECT * FROM t").to_array()
    assert db.commit() is False  # the read did not become a write
    assert stored_name(db.path) is None
    db.sql.exec("INSERT INTO t VALUES (1)")
    assert db.commit() is True
    assert stored_name(db.path) == "bob"
    db.close()


def test_an_object_holding_only_its_name_is_empty(tmp_path):
    db = ObjectDatabase(tmp_path / "o.sqlite", name="carol")
    db.sql.exec("CREATE TABLE t (x)")
    db.commit()
    assert stored_name(db.path) == "carol"
    db.sql.exec("DROP TABLE t")
    db.commit()
    assert db.database_size == 4096
    assert db.discard_files_if_empty() is True
    assert not db.path.exists()


def test_delete_all_does_not_write_the_name_back(tmp_path):
    db = ObjectDatabase(tmp_path / "o.sqlite", name="dave")
    db.kv.put("k", 1)
    db.commit()
    db.delete_all()
    db.commit()
    assert db.discard_files_if_empty() is True
    assert list(tmp_path.iterdir()) == []
