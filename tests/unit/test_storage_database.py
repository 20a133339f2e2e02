"""ObjectDatabase as a whole: the implicit transaction, savepoints, the alarm row, lazy opening and
leaving no files, delete_all, database size and damaged files. Real SQLite files in tmp_path."""

from __future__ import annotations

import os

import pytest

from duro.errors import CorruptDatabaseError, InternalError, SqlError, StorageError, StorageLimitError
from duro.storage import ObjectDatabase
from duro.storage.journal import HistoryOptions
from duro.storage.txn import NO_TXN, ImplicitTxn, LostTxn


class Opens:
    """Counts on_transaction_open calls."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def opens():
    return Opens()


@pytest.fixture
def db(tmp_path, opens):
    database = ObjectDatabase(tmp_path / "obj.sqlite", on_transaction_open=opens)
    yield database
    database.close()


def files(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if p.is_file())


# ---- the implicit transaction ------------------------------------------------------------------------


def test_two_writes_then_rollback_leaves_nothing(db):
    db.kv_put("a", 1)
    db.sql.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    assert db.in_transaction
    db.rollback()
    assert not db.in_transaction
    assert db.kv_get("a") is None
    assert db.sql.exec("SELECT count(*) AS n FROM sqlite_master WHERE name = 't'").one().n == 0
    db.rollback()  # nothing open: a no-op


def test_commit_reports_whether_anything_was_written(db):
    assert db.commit() is False  # nothing open
    db.kv_put("a", 1)
    assert db.commit() is True
    assert db.commit_count == 1
    db.sql.exec("SELECT 1")  # sql.exec opens the transaction: it cannot know it only reads
    assert db.in_transaction
    assert db.commit() is False
    assert db.kv_get("a") == 1  # a KV read outside a transaction opens none
    assert not db.in_transaction
    assert db.commit_count == 1
    db.sql.exec("CREATE TABLE t(x)")  # schema only: still a write
    assert db.commit() is True
    assert db.commit_count == 2


def test_on_transaction_open_once_per_transaction(db, opens):
    assert db.kv_get("x") is None
    assert opens.count == 0
    db.kv_put("a", 1)
    db.kv_put("b", 2)
    db.sql.exec("CREATE TABLE t(x)")
    db.set_alarm(5)
    assert opens.count == 1
    db.commit()
    db.kv_delete("a")
    assert opens.count == 2
    db.rollback()
    db.sql.exec("SELECT 1")
    assert opens.count == 3
    db.commit()


def test_reads_inside_the_transaction_see_its_writes(db):
    db.kv_put("a", 1)
    db.sql.exec("CREATE TABLE t(x); INSERT INTO t VALUES (7)")
    assert db.kv_get("a") == 1
    assert db.kv_list() == {"a": 1}
    assert db.sql.exec("SELECT x FROM t").one().x == 7


def test_deferred_foreign_key_violation_fails_at_commit_and_rolls_back(db):
    db.sql.exec("CREATE TABLE p(id INTEGER PRIMARY KEY);"
                "CREATE TABLE c(id INTEGER PRIMARY KEY, pid REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED)")
    db.sql.exec("INSERT INTO p VALUES (1); INSERT INTO c VALUES (1, 1)")
    assert db.commit() is True
    db.kv_put("same-turn", 1)
    db.sql.exec("INSERT INTO c VALUES (2, 99)")  # deferred: accepted until commit
    with pytest.raises(SqlError) as info:
        db.commit()
    assert str(info.value) == ("FOREIGN KEY constraint failed: SQLITE_CONSTRAINT "
                               "(extended: SQLITE_CONSTRAINT_FOREIGNKEY)")
    assert not db.in_transaction
    assert db.kv_get("same-turn") is None
    assert db.sql.exec("SELECT count(*) AS n FROM c").one().n == 1
    db.commit()
    db.kv_put("after", 1)  # still usable
    assert db.commit() is True


def test_defer_foreign_keys_pragma_defers_to_commit(db):
    db.sql.exec("CREATE TABLE p(id INTEGER PRIMARY KEY); CREATE TABLE c(pid REFERENCES p(id))")
    db.commit()
    db.sql.exec("PRAGMA defer_foreign_keys = ON; INSERT INTO c VALUES (5)")
    with pytest.raises(SqlError, match="FOREIGN KEY constraint failed"):
        db.commit()
    db.sql.exec("PRAGMA defer_foreign_keys = ON; INSERT INTO c VALUES (5); INSERT INTO p VALUES (5)")
    assert db.commit() is True


def test_transaction_rolled_back_by_sqlite_fails_the_commit(db):
    db.sql.exec("CREATE TABLE t(x); CREATE TABLE log(x);"
                "CREATE TRIGGER boom BEFORE INSERT ON t WHEN new.x = 'boom' "
                "BEGIN SELECT RAISE(ROLLBACK, 'nope'); END")
    db.commit()
    db.kv_put("a", 1)
    with pytest.raises(SqlError, match="nope"):
        db.sql.exec("INSERT INTO t VALUES ('boom')")
    assert not db.in_transaction
    with pytest.raises(SqlError) as info:
        db.commit()
    assert str(info.value) == "Cannot commit transaction due to an earlier SQL critical error"
    assert db.kv_get("a") is None
    assert db.commit() is False
    db.kv_put("b", 2)
    assert db.commit() is True


# ---- savepoints ---------------------------------------------------------------------------------------


def test_transaction_sync_returns_the_callbacks_value(db):
    def work():
        db.kv_put("a", 1)
        return "done"
    assert db.transaction_sync(work) == "done"
    assert db.kv_get("a") == 1
    assert db.commit() is True


def test_transaction_sync_rolls_back_on_exception(db):
    db.kv_put("outside", 0)

    def fail():
        db.kv_put("inside", 1)
        db.sql.exec("CREATE TABLE t(x)")
        raise ValueError("boom")
    with pytest.raises(ValueError, match="boom"):
        db.transaction_sync(fail)
    assert db.kv_get("inside") is None
    assert db.kv_get("outside") == 0
    assert db.sql.exec("SELECT count(*) AS n FROM sqlite_master WHERE name = 't'").one().n == 0
    assert db.commit() is True


def test_transaction_sync_nests(db):
    names = []

    def inner_fail():
        names.append(db.port.txn.savepoints[-1])
        db.kv_put("inner", 1)
        raise KeyError("inner")

    def outer():
        names.append(db.port.txn.savepoints[-1])
        db.kv_put("outer", 1)
        with pytest.raises(KeyError):
            db.transaction_sync(inner_fail)
        assert db.transaction_sync(lambda: db.kv_put("inner2", 2) or 5) == 5
        return "ok"
    assert db.transaction_sync(outer) == "ok"
    assert names == ["_cf_sync_savepoint_0", "_cf_sync_savepoint_1"]
    assert db.kv_list() == {"inner2": 2, "outer": 1}


def test_transaction_sync_user_sql_cannot_touch_its_savepoint(db):
    def work():
        db.sql.exec("RELEASE _cf_sync_savepoint_0")
    with pytest.raises(SqlError, match="^To execute a transaction"):
        db.transaction_sync(work)


def test_savepoint_release_and_rollback_to(db):
    db.kv_put("base", 0)
    keep = db.savepoint()
    db.kv_put("kept", 1)
    db.release(keep)
    drop = db.savepoint()
    db.kv_put("dropped", 2)
    inner = db.savepoint()
    db.kv_put("dropped-inner", 3)
    db.rollback_to(drop)  # also ends the inner savepoint
    assert db.kv_list() == {"base": 0, "kept": 1}
    db.release(drop)  # already ended: no-op (transaction() releases after txn.rollback())
    db.rollback_to(inner)  # already ended with its parent: no-op
    assert db.commit() is True
    assert db.kv_list() == {"base": 0, "kept": 1}
    assert keep != drop != inner


def test_commit_with_an_open_savepoint_is_a_bug(db):
    name = db.savepoint()
    with pytest.raises(InternalError):
        db.commit()
    db.release(name)
    db.commit()


def test_delete_all_inside_a_savepoint_is_refused(db):
    def work():
        db.delete_all()
    db.kv_put("a", 1)
    with pytest.raises(StorageError, match=r"^Cannot call deleteAll\(\) within a transaction$"):
        db.transaction_sync(work)
    assert db.kv_get("a") == 1


# ---- the alarm row ------------------------------------------------------------------------------------


def test_alarm_get_set_delete(db):
    assert db.get_alarm() is None
    db.set_alarm(1_700_000_000_123)
    assert db.get_alarm() == 1_700_000_000_123
    db.set_alarm(1_700_000_000_999.7)  # fractional milliseconds are truncated
    assert db.get_alarm() == 1_700_000_000_999
    assert db.commit() is True
    db.delete_alarm()
    assert db.get_alarm() is None
    db.rollback()
    assert db.get_alarm() == 1_700_000_000_999
    db.delete_alarm()
    db.commit()
    assert db.get_alarm() is None


def test_the_remembered_alarm_follows_savepoints_and_delete_all(db):
    # get_alarm() answers from memory after a read or write; every undo must make it ask again.
    db.set_alarm(10)
    db.commit()

    def fail():
        db.set_alarm(20)
        raise ValueError("no")
    with pytest.raises(ValueError):
        db.transaction_sync(fail)
    assert db.get_alarm() == 10
    sp = db.savepoint()
    db.delete_alarm()
    assert db.get_alarm() is None
    db.rollback_to(sp)
    assert db.get_alarm() == 10
    db.delete_all()
    assert db.get_alarm() is None
    db.rollback()
    assert db.get_alarm() == 10
    assert db.port.run_internal("SELECT value FROM _cf_METADATA WHERE key = 1") == [(10,)]


def test_alarm_survives_reopen_and_is_hidden(tmp_path):
    db = ObjectDatabase(tmp_path / "a.sqlite")
    db.set_alarm(42)
    db.commit()
    db.close()
    again = ObjectDatabase(tmp_path / "a.sqlite")
    assert again.get_alarm() == 42
    with pytest.raises(SqlError, match="prohibited"):
        again.sql.exec("SELECT * FROM _cf_METADATA")
    again.close()


def test_alarm_rejects_non_numbers(db):
    with pytest.raises(TypeError):
        db.set_alarm("soon")
    with pytest.raises(TypeError):
        db.set_alarm(True)


# ---- lazy open and no stray files ---------------------------------------------------------------------


def test_reads_of_a_never_written_database_create_no_file(tmp_path, db):
    assert not db.exists()
    assert db.kv_get("a") is None
    assert db.kv_list() == {}
    assert db.get_alarm() is None
    assert db.database_size == 4096
    db.delete_alarm()
    db.delete_all()
    assert db.kv_delete("a") is False
    assert db.commit() is False
    assert db.statistics()["open"] is False
    assert not db.is_open and not db.exists()
    assert files(tmp_path) == []
    db.close()
    assert files(tmp_path) == []


def test_a_database_that_only_read_leaves_no_file(tmp_path, db):
    assert db.sql.exec("SELECT 1 AS one").one().one == 1
    assert db.is_open and db.exists()
    assert db.commit() is False
    db.close()
    assert files(tmp_path) == []


def test_uncommitted_writes_leave_no_file_after_close(tmp_path, db):
    db.kv_put("a", 1)
    db.close()  # rolls back
    assert files(tmp_path) == []


def test_an_emptied_database_leaves_no_file(tmp_path, db):
    db.kv_put("a", 1)
    db.commit()
    db.close()
    # The -wal stays, cut to zero bytes (the next open need not create it); the -shm goes.
    assert files(tmp_path) == ["obj.sqlite", "obj.sqlite-wal"]
    assert db.wal_path.stat().st_size == 0
    db.kv_delete("a")
    db.commit()
    db.close()
    assert files(tmp_path) == []


def test_a_database_with_data_keeps_its_file(tmp_path, db):
    db.sql.exec("CREATE TABLE t(x)")
    db.commit()
    assert db.discard_files_if_empty() is False
    db.close()
    assert files(tmp_path) == ["obj.sqlite", "obj.sqlite-wal"]


def test_parent_directories_are_created_on_first_write(tmp_path):
    db = ObjectDatabase(tmp_path / "a" / "b" / "c.sqlite")
    assert db.kv_get("x") is None
    assert not (tmp_path / "a").exists()
    db.kv_put("x", 1)
    db.commit()
    assert (tmp_path / "a" / "b" / "c.sqlite").exists()
    db.close()


def test_wal_mode_and_setup(db):
    db.kv_put("a", 1)
    db.commit()
    assert db.port.run_internal("PRAGMA journal_mode")[0][0] == "wal"
    # NORMAL, not OFF: the runtime syncs the WAL after commits, but SQLite must sync the WAL header
    # when the WAL starts over (else a power loss can replay stale frames: SQLite ticket ff5be73dee).
    assert db.port.run_internal("PRAGMA synchronous")[0][0] == 1
    assert db.port.run_internal("PRAGMA foreign_keys")[0][0] == 1
    assert db.wal_path == db.path.with_name("obj.sqlite-wal")
    assert db.wal_path.exists()


def test_reopening_reuses_the_kept_wal_and_checkpoints_on_close(tmp_path):
    db = ObjectDatabase(tmp_path / "obj.sqlite", history=HistoryOptions())
    db.kv_put("a", 1)
    db.commit()
    inode = db.wal_path.stat().st_ino
    db.close()
    assert db.wal_path.stat().st_size == 0  # checkpointed into the database file, then emptied
    assert not db.path.with_name("obj.sqlite-shm").exists()
    with open(db.path, "rb") as f:  # the row is in the database file itself
        assert b"a" in f.read()
    db.kv_put("b", 2)
    db.commit()
    assert db.wal_path.stat().st_ino == inode  # not created again
    assert (db.kv_get("a"), db.kv_get("b")) == (1, 2)
    db.close()


def test_stale_wal_is_not_replayed_into_a_new_database(tmp_path):
    db = ObjectDatabase(tmp_path / "obj.sqlite")
    (tmp_path / "obj.sqlite-wal").write_bytes(b"left over from a deleted database" * 10)
    db.kv_put("a", 1)
    assert db.commit()
    assert db.kv_get("a") == 1
    db.close()


# ---- delete_all ---------------------------------------------------------------------------------------


def populate(db):
    db.sql.exec(
        "CREATE TABLE p(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE);"
        "CREATE TABLE c(id INTEGER PRIMARY KEY, pid INTEGER NOT NULL REFERENCES p(id));"
        "CREATE INDEX c_pid ON c(pid);"
        "CREATE VIEW pc AS SELECT p.name, c.id FROM p JOIN c ON c.pid = p.id;"
        "CREATE TRIGGER p_del BEFORE DELETE ON p BEGIN SELECT RAISE(ABORT, 'no deletes'); END;"
        "CREATE VIRTUAL TABLE docs USING fts5(body);"
        "CREATE VIRTUAL TABLE box USING rtree(id, lo, hi);"
        "INSERT INTO p(name) VALUES ('a'), ('b'); INSERT INTO c VALUES (1, 1), (2, 2);"
        "INSERT INTO docs VALUES ('hello'); INSERT INTO box VALUES (1, 0, 1);"
        "ANALYZE"
    )
    db.kv_put_many({"k1": 1, "k2": [2]})
    db.set_alarm(123)


def test_delete_all_removes_everything(tmp_path, db):
    populate(db)
    assert db.commit() is True
    assert db.database_size > 4096
    db.delete_all()
    assert db.kv_list() == {}
    assert db.get_alarm() is None
    assert db.sql.exec("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").to_array() == []
    assert db.database_size == 4096  # §13.6
    assert db.commit() is True
    assert db.database_size == 4096
    assert db.discard_files_if_empty() is True
    assert files(tmp_path) == []
    assert not db.is_open
    # The object is usable again and starts from a fresh file.
    db.kv_put("new", 1)
    assert db.commit() is True
    assert db.kv_list() == {"new": 1}
    assert db.sql.exec("SELECT count(*) AS n FROM sqlite_master WHERE name = 'p'").one().n == 0


def test_delete_all_is_atomic_with_the_turn(db):
    populate(db)
    db.commit()
    db.delete_all()
    db.rollback()
    assert db.kv_get("k1") == 1
    assert db.get_alarm() == 123
    assert db.sql.exec("SELECT count(*) AS n FROM c").one().n == 2


def test_writes_after_delete_all_in_the_same_turn_are_kept(tmp_path, db):
    populate(db)
    db.commit()
    db.delete_all()
    db.kv_put("after", 1)
    db.commit()
    assert db.discard_files_if_empty() is False
    assert db.kv_list() == {"after": 1}


def test_discard_refuses_while_a_transaction_is_open(db):
    db.kv_put("a", 1)
    db.kv_delete("a")
    assert db.discard_files_if_empty() is False
    db.commit()
    assert db.discard_files_if_empty() is True


def test_discard_when_there_never_was_a_file(tmp_path, db):
    assert db.discard_files_if_empty() is True
    assert files(tmp_path) == []


def test_discard_opens_a_closed_empty_file(tmp_path):
    db = ObjectDatabase(tmp_path / "obj.sqlite")
    db.kv_put("a", 1)
    db.commit()
    db.kv_delete("a")
    db.commit()
    db.port.close()  # as if the process had stopped before discarding
    assert files(tmp_path) == ["obj.sqlite", "obj.sqlite-wal"]
    assert db.discard_files_if_empty() is True
    assert files(tmp_path) == []


# ---- size -------------------------------------------------------------------------------------------------


def test_database_size(db):
    assert db.database_size == 4096
    db.sql.exec("SELECT 1")
    assert db.database_size == 4096  # fresh file
    db.sql.exec("CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(50000))")
    size = db.database_size
    assert size > 50000 and size % 4096 == 0
    db.commit()
    assert db.database_size == size


# ---- damaged files ----------------------------------------------------------------------------------------


def test_a_file_that_is_not_a_database(tmp_path):
    path = tmp_path / "obj.sqlite"
    path.write_bytes(b"this is not a database at all; " * 200)
    db = ObjectDatabase(path)
    for op in (lambda: db.kv_get("a"), lambda: db.kv_put("a", 1), lambda: db.sql.exec("SELECT 1"),
               lambda: db.database_size, lambda: db.get_alarm(), lambda: db.kv_list()):
        with pytest.raises(CorruptDatabaseError) as info:
            op()
        message = str(info.value)
        assert str(path) in message
        assert "not a valid SQLite database" in message
    assert db.discard_files_if_empty() is False
    db.close()
    assert path.read_bytes().startswith(b"this is not a database")  # never deleted
    assert db.statistics()["corrupt"] is True
    other = ObjectDatabase(tmp_path / "other.sqlite")  # other objects are unaffected
    other.kv_put("a", 1)
    assert other.commit()
    other.close()


def test_a_damaged_page_is_reported_and_sticky(tmp_path):
    path = tmp_path / "obj.sqlite"
    db = ObjectDatabase(path)
    db.sql.exec("CREATE TABLE t(x); INSERT INTO t SELECT randomblob(100) FROM json_each(?)",
                "[" + ",".join(["1"] * 200) + "]")
    db.commit()
    db.close()
    data = bytearray(path.read_bytes())
    data[4096:8192] = b"\xa5" * 4096  # the table's root page
    path.write_bytes(bytes(data))
    damaged = ObjectDatabase(path)
    with pytest.raises(CorruptDatabaseError, match="is damaged"):
        damaged.sql.exec("SELECT count(*) FROM t")
    with pytest.raises(CorruptDatabaseError, match=str(path).replace("\\", "\\\\")):
        damaged.kv_get("a")
    assert not damaged.is_open
    damaged.close()
    assert path.exists()


# ---- close and statistics ----------------------------------------------------------------------------------


def test_close_rolls_back_an_open_transaction(tmp_path):
    db = ObjectDatabase(tmp_path / "obj.sqlite")
    db.kv_put("kept", 1)
    db.commit()
    db.kv_put("lost", 2)
    db.close()
    assert not db.is_open and not db.in_transaction
    assert db.kv_list() == {"kept": 1}
    db.close()


def test_statistics(db):
    stats = db.statistics()
    assert stats["open"] is False and stats["commit_count"] == 0 and stats["file_exists"] is False
    db.kv_put("a", 1)
    db.commit()
    stats = db.statistics()
    assert stats["open"] is True and stats["commit_count"] == 1 and stats["database_size"] >= 4096
    assert stats["in_transaction"] is False and stats["savepoint_depth"] == 0
    assert os.fspath(db.path) == stats["path"]


# ---- the size limit ----------------------------------------------------------------------------------------


def test_a_write_after_a_lost_transaction_is_lost_with_it(db):
    db.sql.exec("CREATE TABLE t(x); CREATE TRIGGER boom BEFORE INSERT ON t WHEN new.x = 'boom' "
                "BEGIN SELECT RAISE(ROLLBACK, 'nope'); END")
    db.commit()
    db.kv_put("a", 1)
    with pytest.raises(SqlError, match="nope"):
        db.sql.exec("INSERT INTO t VALUES ('boom')")
    assert type(db.port.txn) is LostTxn
    db.kv_put("b", 2)  # same turn: a new transaction, but the turn already lost its writes
    assert type(db.port.txn) is ImplicitTxn and db.in_transaction
    with pytest.raises(SqlError, match="^Cannot commit transaction due to an earlier SQL critical error$"):
        db.commit()
    assert db.port.txn is NO_TXN
    assert db.kv_get("a") is None and db.kv_get("b") is None
    db.kv_put("c", 3)
    assert db.commit() is True and db.kv_get("c") == 3


def test_database_full_is_a_storage_limit_error_and_fails_the_turn(db):
    db.sql.exec("CREATE TABLE t(x)")
    db.commit()
    pages = db.port.run_internal("PRAGMA page_count")[0][0]
    db.port.run_internal(f"PRAGMA max_page_count = {pages + 3}")  # stands in for the 10 GB limit
    db.sql.exec("INSERT INTO t VALUES (1)")
    with pytest.raises(StorageLimitError) as info:
        db.sql.exec("INSERT INTO t VALUES (randomblob(100000))")
    assert str(info.value) == "database or disk is full: SQLITE_FULL"
    # SQLite rolled the whole transaction back, so this turn cannot commit.
    with pytest.raises(SqlError, match="^Cannot commit transaction due to an earlier SQL critical error$"):
        db.commit()
    assert db.sql.exec("SELECT count(*) AS n FROM t").one().n == 0
    db.sql.exec("INSERT INTO t VALUES (2)")
    assert db.commit() is True


def test_reads_leave_no_statement_that_blocks_dropping_tables(db):
    db.kv_put_many({"a": 1, "b": 2})
    db.sql.exec("CREATE TABLE t(x); CREATE TABLE u(x); INSERT INTO u VALUES (1), (2)")
    db.commit()
    assert db.kv_get("a") == 1
    assert db.kv_get_many(["a", "b"]) == {"a": 1, "b": 2}
    it = db.kv.list()
    next(it)
    db.sql.exec("SELECT x FROM u; SELECT 1")
    db.sql.exec("DROP TABLE t")
    assert db.get_alarm() is None
    db.delete_all()
    assert db.commit() is True
    assert db.discard_files_if_empty() is True
