"""ctx.storage.sql of one object: bindings and result types, multi-statement rules, the cursor API,
error texts and statement-level rollback. Real SQLite files in tmp_path."""

from __future__ import annotations

import pytest

from duro.errors import InvalidInputError, SqlError, StorageError, StorageLimitError
from duro.storage import ObjectDatabase, Row
from duro.storage.sql import split_statements


@pytest.fixture
def db(tmp_path):
    database = ObjectDatabase(tmp_path / "obj.sqlite")
    yield database
    database.close()


@pytest.fixture
def sql(db):
    return db.sql.exec


# ---- bindings and result types -------------------------------------------------------------------


def test_binding_and_result_types(sql):
    row = sql(
        "SELECT ? AS n, typeof(?) AS tn, ? AS b, typeof(?) AS tb, ? AS i, typeof(?) AS ti, ? AS f, "
        "typeof(?) AS tf, ? AS s, typeof(?) AS ts, ? AS x, typeof(?) AS tx",
        None, None, True, False, 7, 7, 1.5, 1.5, "héllo", "s", b"\x00\x01", b"",
    ).one()
    assert row == {"n": None, "tn": "null", "b": 1, "tb": "integer", "i": 7, "ti": "integer",
                   "f": 1.5, "tf": "real", "s": "héllo", "ts": "text", "x": b"\x00\x01", "tx": "blob"}
    assert type(row["x"]) is bytes


def test_ints_bind_as_integer_not_real(sql):
    # Known divergence from Cloudflare (§13.7), documented in duro.storage.sql.
    assert sql("SELECT typeof(?) AS t, ? / 2 AS half", 1, 3).one() == {"t": "integer", "half": 1}
    assert sql("SELECT ? AS big", 2**62 + 1).one().big == 2**62 + 1


def test_buffer_bindings_are_blobs(sql):
    row = sql("SELECT ? AS a, ? AS b, typeof(?) AS t", bytearray(b"ab"), memoryview(b"cd"), bytearray()).one()
    assert row == {"a": b"ab", "b": b"cd", "t": "blob"}


def test_unsupported_binding_is_type_error_naming_the_type(sql):
    for value, name in ((object(), "object"), ([1], "list"), ({"a": 1}, "dict"), ((1,), "tuple")):
        with pytest.raises(TypeError, match=repr(name)):
            sql("SELECT ?", value)


def test_int_outside_64_bits_is_rejected(sql):
    with pytest.raises(InvalidInputError, match="64-bit"):
        sql("SELECT ?", 2**64)


def test_query_must_be_str(sql):
    with pytest.raises(TypeError):
        sql(b"SELECT 1")


def test_result_type_mapping(db, sql):
    sql("CREATE TABLE t(i INTEGER, r REAL, s TEXT, b BLOB, n)")
    sql("INSERT INTO t VALUES (1, 2, 'x', x'ff', NULL)")
    row = sql("SELECT * FROM t").one()
    assert row == {"i": 1, "r": 2.0, "s": "x", "b": b"\xff", "n": None}
    assert [type(v) for v in row.values()] == [int, float, str, bytes, type(None)]


# ---- statements run on exec ------------------------------------------------------------------------


def test_write_applies_without_iterating_the_cursor(sql):
    sql("CREATE TABLE t(x)")
    sql("INSERT INTO t VALUES (1)")
    sql("INSERT INTO t VALUES (2) RETURNING x")  # cursor never read
    assert [r.x for r in sql("SELECT x FROM t ORDER BY x")] == [1, 2]


# ---- multi-statement queries ------------------------------------------------------------------------


def test_multiple_statements_all_run_and_the_cursor_is_the_last(sql):
    cursor = sql("CREATE TABLE t(x); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); SELECT x FROM t ORDER BY x")
    assert [r.x for r in cursor] == [1, 2]


def test_bindings_apply_to_the_last_statement(sql):
    sql("CREATE TABLE t(x)")
    cursor = sql("INSERT INTO t VALUES (10); SELECT x, ? AS y FROM t", "b")
    assert cursor.to_array() == [{"x": 10, "y": "b"}]


def test_only_the_last_statement_may_have_parameters(sql):
    sql("CREATE TABLE t(x)")
    text = ("When executing multiple SQL statements in a single call, only the last statement can "
            "have parameters.")
    with pytest.raises(SqlError) as info:
        sql("INSERT INTO t VALUES (?); SELECT 1", 1)
    assert str(info.value) == text
    with pytest.raises(SqlError, match="^When executing multiple"):
        sql("INSERT INTO t VALUES (?); SELECT ?", 1)
    assert sql("SELECT count(*) AS n FROM t").one().n == 0


def test_wrong_number_of_bindings(sql):
    for query, args in (("SELECT ?", ()), ("SELECT ?", (1, 2)), ("SELECT 1", (1,)),
                        ("SELECT 1; SELECT ?, ?", (1,))):
        with pytest.raises(SqlError) as info:
            sql(query, *args)
        assert str(info.value) == "Wrong number of parameter bindings for SQL query."


def test_numbered_and_named_parameters_bind_by_position(sql):
    assert sql("SELECT ?2 AS a, ?1 AS b", "x", "y").one() == {"a": "y", "b": "x"}
    assert sql("SELECT :p AS a, :q AS b", 1, 2).one() == {"a": 1, "b": 2}


def test_semicolons_inside_strings_comments_and_triggers(sql):
    assert sql("SELECT ';' AS a").one().a == ";"
    assert sql("SELECT 'a;b' AS a;").one().a == "a;b"
    sql("CREATE TABLE t(x); CREATE TABLE log(m);"
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO log VALUES ('a;b'); INSERT INTO log VALUES (new.x); END;")
    sql("INSERT INTO t VALUES (5); -- a comment; with a semicolon\nSELECT 1")
    assert [r.m for r in sql("SELECT m FROM log /* ; */ ORDER BY rowid")] == ["a;b", 5]
    assert sql("SELECT 1 AS one;;  ; SELECT 2 AS two;\n\n").one().two == 2
    assert sql(";SELECT 1 AS one").one().one == 1


def test_text_after_the_last_statement(sql):
    # As measured on workerd: whitespace is fine; a comment or a stray ";" after the last
    # statement fails with "no statement", after the statements before it ran.
    sql("CREATE TABLE t(x)")
    for query in ("INSERT INTO t VALUES (1); -- done", "INSERT INTO t VALUES (2);;", "INSERT INTO t VALUES (3); /* */"):
        with pytest.raises(SqlError) as info:
            sql(query)
        assert str(info.value) == "SQL code did not contain a statement."
    assert [r.x for r in sql("SELECT x FROM t ORDER BY x")] == [1, 2, 3]


def test_statement_length_limit(sql):
    ok = "SELECT '" + "x" * (100_000 - 9) + "'"
    assert len(ok) == 100_000 and sql(ok).one()
    with pytest.raises(StorageLimitError) as info:
        sql(ok + " ")
    assert str(info.value) == "statement too long: SQLITE_TOOBIG"
    # The limit is on the whole text of the call, counted in UTF-8 bytes.
    with pytest.raises(StorageLimitError, match="^statement too long: SQLITE_TOOBIG$"):
        sql("SELECT '" + "x" * 60_000 + "'; SELECT '" + "y" * 60_000 + "'")
    with pytest.raises(StorageLimitError, match="^statement too long"):
        sql("SELECT '" + "é" * 50_000 + "'")


def test_split_statements():
    assert split_statements("SELECT 1; SELECT 2;") == ("SELECT 1;", " SELECT 2;")
    assert split_statements("SELECT ';'; -- x") == ("SELECT ';';", "")
    assert split_statements("SELECT 1;  \n") == ("SELECT 1;",)
    assert split_statements(" ; ;") == ()


@pytest.mark.parametrize("query", ["", "   ", "-- nothing", "/* nothing */;", ";"])
def test_empty_query(sql, query):
    with pytest.raises(SqlError, match=r"^SQL code did not contain a statement\.$"):
        sql(query)


def test_error_in_a_later_statement_keeps_earlier_ones(db, sql):
    sql("CREATE TABLE t(x UNIQUE)")
    with pytest.raises(SqlError, match="UNIQUE"):
        sql("INSERT INTO t VALUES (1); INSERT INTO t VALUES (1)")
    assert sql("SELECT count(*) AS n FROM t").one().n == 1


# ---- cursor API ---------------------------------------------------------------------------------------


@pytest.fixture
def three(sql):
    sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sql("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    return lambda: sql("SELECT id, v FROM t ORDER BY id")


def test_iteration_and_python_next(three):
    cursor = three()
    assert next(cursor) == {"id": 1, "v": "a"}
    assert [r.id for r in cursor] == [2, 3]
    with pytest.raises(StopIteration):
        next(cursor)


def test_js_style_next(three):
    cursor = three()
    first = cursor.next()
    assert first.done is False and first.value == {"id": 1, "v": "a"}
    cursor.next()
    cursor.next()
    end = cursor.next()
    assert end == {"done": True, "value": None}


def test_to_array_returns_remaining_rows(three):
    cursor = three()
    next(cursor)
    assert cursor.to_array() == [{"id": 2, "v": "b"}, {"id": 3, "v": "c"}]
    assert cursor.toArray() == []


def test_one(three, sql):
    assert sql("SELECT v FROM t WHERE id = 2").one() == {"v": "b"}
    with pytest.raises(StorageError) as info:
        sql("SELECT v FROM t WHERE id = 9").one()
    assert str(info.value) == "Expected exactly one result from SQL query, but got no results."
    with pytest.raises(StorageError) as info:
        three().one()
    assert str(info.value) == "Expected exactly one result from SQL query, but got multiple results."


def test_raw_shares_position(three):
    cursor = three()
    assert next(cursor) == {"id": 1, "v": "a"}
    raw = cursor.raw()
    assert next(raw) == [2, "b"]
    assert cursor.to_array() == [{"id": 3, "v": "c"}]
    assert raw.to_array() == []
    fresh = three().raw()
    assert fresh.next().value == [1, "a"]
    assert fresh.toArray() == [[2, "b"], [3, "c"]]
    assert fresh.next().done is True
    assert fresh.column_names == ["id", "v"] == fresh.columnNames


def test_column_names_with_duplicates_and_after_consumption(three, sql):
    cursor = sql("SELECT t.id, t.v, u.id, 'x' AS v FROM t JOIN t AS u ON u.id = t.id ORDER BY t.id")
    assert cursor.column_names == ["id", "v", "id", "v"]
    rows = cursor.to_array()
    assert rows[0] == {"id": 1, "v": "x"}  # the last column of a name wins
    assert cursor.columnNames == ["id", "v", "id", "v"]


def test_column_names_of_empty_results_and_writes(three, sql):
    assert sql("SELECT id, v, id AS k FROM t WHERE id > 100").column_names == ["id", "v", "k"]
    assert sql("UPDATE t SET v = 'z' WHERE id = 1").column_names == []
    assert sql("DELETE FROM t WHERE id > 100 RETURNING id").column_names == ["id"]


def test_rows_read_and_written(three, sql):
    cursor = three()
    assert cursor.rows_read == 3 and cursor.rowsRead == 3
    assert cursor.rows_written == 0 and cursor.rowsWritten == 0
    update = sql("UPDATE t SET v = 'q' WHERE id >= 2")
    assert update.rows_written == 2 and update.rowsWritten == 2
    assert sql("INSERT INTO t(v) VALUES ('d'), ('e') RETURNING id").rows_written == 2
    assert sql("DELETE FROM t").rows_written == 5
    assert sql("CREATE TABLE other(x)").rows_written == 0


def test_row_is_a_dict_with_attribute_access(three):
    row = next(three())
    assert isinstance(row, dict) and isinstance(row, Row)
    assert row.v == row["v"] == "a"
    assert row.to_py() is row
    with pytest.raises(AttributeError, match="no column 'nope'"):
        row.nope


# ---- errors ---------------------------------------------------------------------------------------------


def test_syntax_error_text(sql):
    with pytest.raises(SqlError) as info:
        sql("SELEC 1")
    assert str(info.value) == 'near "SELEC": syntax error at offset 0: SQLITE_ERROR'
    assert info.value.code == "SQLITE_ERROR" and info.value.extended is None


def test_no_such_table_text(sql):
    with pytest.raises(SqlError) as info:
        sql("SELECT * FROM missing")
    assert str(info.value) == "no such table: missing: SQLITE_ERROR"  # SQLite gives no offset
    sql("CREATE TABLE t(a)")
    with pytest.raises(SqlError) as info:
        sql("SELECT nope FROM t")
    assert str(info.value) == "no such column: nope at offset 7: SQLITE_ERROR"


def test_constraint_error_text(sql):
    sql("CREATE TABLE u(id INTEGER PRIMARY KEY, e UNIQUE, n NOT NULL DEFAULT 0)")
    sql("INSERT INTO u VALUES (1, 'a', 0)")
    with pytest.raises(SqlError) as info:
        sql("INSERT INTO u VALUES (1, 'b', 0)")
    assert str(info.value) == ("UNIQUE constraint failed: u.id: SQLITE_CONSTRAINT "
                               "(extended: SQLITE_CONSTRAINT_PRIMARYKEY)")
    assert info.value.code == "SQLITE_CONSTRAINT"
    assert info.value.extended == "SQLITE_CONSTRAINT_PRIMARYKEY"
    with pytest.raises(SqlError, match=r"^UNIQUE constraint failed: u\.e: SQLITE_CONSTRAINT \(extended: SQLITE_CONSTRAINT_UNIQUE\)$"):
        sql("INSERT INTO u VALUES (2, 'a', 0)")
    with pytest.raises(SqlError, match=r"^NOT NULL constraint failed: u\.n: SQLITE_CONSTRAINT \(extended: SQLITE_CONSTRAINT_NOTNULL\)$"):
        sql("INSERT INTO u VALUES (3, 'c', NULL)")


def test_immediate_foreign_key_error(sql):
    sql("CREATE TABLE p(id INTEGER PRIMARY KEY); CREATE TABLE c(pid REFERENCES p(id))")
    with pytest.raises(SqlError) as info:
        sql("INSERT INTO c VALUES (9)")
    assert str(info.value) == ("FOREIGN KEY constraint failed: SQLITE_CONSTRAINT "
                               "(extended: SQLITE_CONSTRAINT_FOREIGNKEY)")


def test_datatype_mismatch_text(sql):
    sql("CREATE TABLE s(i INTEGER PRIMARY KEY)")
    with pytest.raises(SqlError, match=r"^datatype mismatch: SQLITE_MISMATCH$"):
        sql("INSERT INTO s VALUES ('x')")


def test_too_big_row_is_storage_limit_error(db, sql):
    sql("CREATE TABLE b(x BLOB)")
    sql("INSERT INTO b VALUES (?)", b"x" * 1_999_000)
    with pytest.raises(StorageLimitError) as info:
        sql("INSERT INTO b VALUES (?)", b"x" * 2_000_001)
    assert str(info.value) == "string or blob too big: SQLITE_TOOBIG"
    with pytest.raises(StorageLimitError):
        sql("SELECT zeroblob(3000000)")
    assert sql("SELECT count(*) AS n FROM b").one().n == 1
    assert db.commit() is True


def test_limits(sql):
    with pytest.raises(SqlError, match=r"^too many terms in compound SELECT"):
        sql("SELECT 1 UNION SELECT 2 UNION SELECT 3 UNION SELECT 4 UNION SELECT 5 UNION SELECT 6")
    sql("SELECT 1 UNION SELECT 2 UNION SELECT 3 UNION SELECT 4 UNION SELECT 5")
    with pytest.raises(SqlError, match="too many SQL variables"):
        sql("SELECT " + ", ".join(["?"] * 101), *range(101))
    assert len(sql("SELECT " + ", ".join(["?"] * 100), *range(100)).raw().to_array()[0]) == 100
    with pytest.raises(SqlError):
        sql("CREATE TABLE wide(" + ", ".join(f"c{i}" for i in range(101)) + ")")
    with pytest.raises(SqlError, match="^statement too long: SQLITE_TOOBIG$"):
        sql("SELECT 1" + " " * 100_000)
    with pytest.raises(SqlError, match="LIKE or GLOB pattern too complex"):
        sql("SELECT 'a' LIKE ?", "%" * 51)
    with pytest.raises(SqlError, match="Expression tree is too large"):
        sql("SELECT " + " + ".join(["1"] * 101))


def test_failed_statement_keeps_the_transaction_usable(db, sql):
    sql("CREATE TABLE t(x UNIQUE)")
    assert db.commit() is True
    sql("INSERT INTO t VALUES (1)")
    with pytest.raises(SqlError):
        sql("INSERT INTO t VALUES (2), (1)")  # fails midway: statement-level rollback
    with pytest.raises(SqlError):
        sql("SELEC")
    sql("INSERT INTO t VALUES (3)")
    assert db.in_transaction
    assert db.commit() is True
    assert [r.x for r in sql("SELECT x FROM t ORDER BY x")] == [1, 3]


def test_database_size_on_sql(db, sql):
    assert db.sql.database_size == 4096 == db.sql.databaseSize
    sql("CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(10000))")
    assert db.sql.databaseSize > 4096
    assert db.sql.databaseSize % 4096 == 0
