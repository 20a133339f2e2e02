"""What user SQL may and may not do (reference §3.5 "Disallowed / restricted SQL", §13), with exact
error texts. Real SQLite files in tmp_path."""

from __future__ import annotations

import pytest

from duro.errors import SqlError
from duro.storage import ObjectDatabase

NOT_AUTHORIZED = "not authorized: SQLITE_AUTH"
TRANSACTION_TEXT = (
    "To execute a transaction, please use the state.storage.transaction() or "
    "state.storage.transactionSync() APIs instead of the SQL BEGIN TRANSACTION or SAVEPOINT "
    "statements. The JavaScript API is safer because it will automatically roll back on "
    "exceptions, and because it interacts correctly with Durable Objects' automatic atomic "
    "write coalescing."
)


@pytest.fixture
def db(tmp_path):
    database = ObjectDatabase(tmp_path / "obj.sqlite")
    database.sql.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    database.sql.exec("CREATE INDEX t_v ON t(v)")
    database.kv_put("k", 1)  # creates _cf_KV
    assert database.commit()
    yield database
    database.close()


@pytest.fixture
def sql(db):
    return db.sql.exec


def denied(sql, query, *args):
    with pytest.raises(SqlError) as info:
        sql(query, *args)
    return str(info.value)


# ---- transactions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("query", [
    "BEGIN", "BEGIN TRANSACTION", "BEGIN IMMEDIATE", "COMMIT", "END", "ROLLBACK",
    "SAVEPOINT sp", "SAVEPOINT _cf_sync_savepoint_0", "RELEASE sp", "ROLLBACK TO sp",
    "SELECT 1; BEGIN",
])
def test_transaction_statements_are_refused_with_cloudflares_text(sql, query):
    with pytest.raises(SqlError) as info:
        sql(query)
    assert str(info.value) == TRANSACTION_TEXT
    assert info.value.code == "SQLITE_AUTH"


def test_transaction_refusal_leaves_the_implicit_transaction_intact(db, sql):
    sql("INSERT INTO t VALUES (1, 'a')")
    denied(sql, "COMMIT")
    db.rollback()
    assert sql("SELECT count(*) AS n FROM t").one().n == 0


# ---- hidden tables and _cf_ names --------------------------------------------------------------------


def test_reading_the_kv_table_is_prohibited(sql):
    assert denied(sql, "SELECT * FROM _cf_KV") == "access to _cf_KV.key is prohibited: SQLITE_AUTH"
    assert denied(sql, "SELECT value FROM _cf_kv") == "access to _cf_KV.value is prohibited: SQLITE_AUTH"
    assert "prohibited" in denied(sql, "SELECT count(key) FROM _cf_KV")


@pytest.mark.parametrize("query", [
    "CREATE TABLE _cf_x(a)",
    "CREATE TABLE _CF_x(a)",
    "CREATE TABLE _Cf_X(a)",
    'CREATE TABLE "_cf_quoted"(a)',
    "CREATE TABLE IF NOT EXISTS _cf_METADATA(a)",
    "CREATE INDEX _cf_i ON t(v)",
    "CREATE INDEX i2 ON _cf_KV(value)",
    "CREATE VIEW _cf_v AS SELECT 1",
    "CREATE TRIGGER _cf_tr AFTER INSERT ON t BEGIN SELECT 1; END",
    "CREATE TRIGGER tr AFTER INSERT ON _cf_KV BEGIN SELECT 1; END",
    "DROP TABLE _cf_KV",
    "INSERT INTO _cf_KV VALUES ('a', x'00')",
    "DELETE FROM _cf_KV",
    "ALTER TABLE _cf_KV ADD COLUMN c",
    "ALTER TABLE _cf_KV RENAME TO mine",
    "ALTER TABLE t RENAME TO _cf_x",
    "ALTER TABLE t RENAME TO _CF_X",
    'ALTER TABLE t RENAME TO "_cf_x"',
    "ALTER TABLE t RENAME /* sneaky */ TO [_cF_x]",
    "ALTER TABLE t RENAME TO _cf_METADATA",
    "CREATE VIRTUAL TABLE _cf_f USING fts5(a)",
])
def test_cf_names_are_not_authorized(sql, query):
    assert denied(sql, query) == NOT_AUTHORIZED


def test_update_of_kv_table_is_not_authorized(sql):
    assert denied(sql, "UPDATE _cf_KV SET value = NULL") == NOT_AUTHORIZED


def test_rename_onto_an_existing_hidden_table_fails(sql):
    assert "already another table" in denied(sql, "ALTER TABLE t RENAME TO _cf_KV")


def test_refused_rename_changes_nothing(db, sql):
    denied(sql, "ALTER TABLE t RENAME TO _cf_x")
    names = {r.name for r in sql("SELECT name FROM sqlite_master")}
    assert "t" in names and not any(n.lower().startswith("_cf_x") for n in names)
    sql("INSERT INTO t VALUES (1, 'still here')")
    # A refused rename in a multi-statement query keeps the earlier statements, like any error.
    denied(sql, "CREATE TABLE a(x); ALTER TABLE a RENAME TO _cf_a")
    assert sql("SELECT count(*) AS n FROM sqlite_master WHERE name = 'a'").one().n == 1
    assert db.commit() is True


def test_allowed_alter_table(sql):
    sql("ALTER TABLE t ADD COLUMN _cf_column_names_are_fine")
    sql("ALTER TABLE t RENAME COLUMN v TO value")
    sql("ALTER TABLE t RENAME TO renamed")
    sql("ALTER TABLE renamed RENAME TO t")
    assert sql("SELECT * FROM t").column_names == ["id", "value", "_cf_column_names_are_fine"]


def test_fts5_shadow_tables_cannot_get_cf_names(sql):
    assert "not authorized" in denied(sql, "CREATE VIRTUAL TABLE _cf USING fts5(a)")
    sql("CREATE VIRTUAL TABLE f USING fts5(a)")
    assert denied(sql, "ALTER TABLE f RENAME TO _cf") == NOT_AUTHORIZED
    sql("INSERT INTO f VALUES ('still works')")
    assert sql("SELECT a FROM f WHERE f MATCH 'works'").one().a == "still works"


def test_a_view_cannot_expose_the_kv_table(sql):
    sql("CREATE VIEW peek AS SELECT * FROM _cf_KV")
    assert denied(sql, "SELECT * FROM peek") == "access to _cf_KV.key is prohibited: SQLITE_AUTH"


def test_users_cannot_reuse_duros_own_prepared_statements(db, sql):
    # duro's statements are prepared with the authorizer bypassed; the statement cache must not
    # hand them to user SQL of the same text.
    assert db.kv_get("k") == 1
    assert "prohibited" in denied(sql, "SELECT value FROM _cf_KV WHERE key = ?", "k")
    db.kv_put("k", 2)
    assert denied(sql, "INSERT OR REPLACE INTO _cf_KV (key, value) VALUES (?, ?)", "k", b"") == NOT_AUTHORIZED
    assert db.kv_get("k") == 2


def test_sqlite_master_is_readable_and_lists_hidden_tables(sql):
    names = {r.name for r in sql("SELECT name FROM sqlite_master")}
    assert {"t", "t_v", "_cf_KV"} <= names
    assert {r.name for r in sql("SELECT name FROM sqlite_schema")} == names


# ---- attach, temp, virtual tables --------------------------------------------------------------------


@pytest.mark.parametrize("query", [
    "ATTACH DATABASE ':memory:' AS other",
    "ATTACH 'x.db' AS other",
    "DETACH other",
    "CREATE TEMP TABLE tt(a)",
    "CREATE TEMPORARY TABLE tt(a)",
    "CREATE TEMP VIEW tv AS SELECT 1",
    "CREATE TEMP TRIGGER ttr AFTER INSERT ON t BEGIN SELECT 1; END",
    "CREATE VIRTUAL TABLE f4 USING fts4(a)",
    "CREATE VIRTUAL TABLE f3 USING fts3(a)",
    "CREATE VIRTUAL TABLE g USING geopoly(a)",
])
def test_attach_temp_and_other_virtual_tables_are_not_authorized(sql, query):
    assert denied(sql, query) == NOT_AUTHORIZED


def test_table_statistics_vtab_is_not_readable(sql):
    assert "prohibited" in denied(sql, "SELECT * FROM dbstat")


def test_fts5_and_rtree_are_allowed(sql):
    sql("CREATE VIRTUAL TABLE docs USING fts5(title, body)")
    sql("INSERT INTO docs VALUES (?, ?)", "greeting", "hello world of sqlite")
    row = sql("SELECT highlight(docs, 1, '[', ']') AS h, snippet(docs, 1, '<', '>', '..', 4) AS s, "
              "bm25(docs) AS score FROM docs WHERE docs MATCH ?", "world").one()
    assert row.h == "hello [world] of sqlite"
    assert "<world>" in row.s
    assert isinstance(row.score, float)
    sql("CREATE VIRTUAL TABLE vocab USING fts5vocab(docs, row)")
    assert {r.term for r in sql("SELECT term FROM vocab")} >= {"hello", "world"}
    sql("CREATE VIRTUAL TABLE box USING rtree(id, minx, maxx)")
    sql("CREATE VIRTUAL TABLE box32 USING rtree_i32(id, minx, maxx)")
    sql("INSERT INTO box VALUES (1, 0, 10)")
    assert sql("SELECT id FROM box WHERE minx < 5").one().id == 1
    sql("DROP TABLE vocab")
    sql("DROP TABLE docs")


# ---- PRAGMAs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", [
    "PRAGMA user_version",
    "PRAGMA user_version = 3",
    "PRAGMA journal_mode",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA synchronous = OFF",
    "PRAGMA hard_heap_limit",
    "PRAGMA page_size = 8192",
    "PRAGMA data_version = 1",
    "PRAGMA foreign_keys = maybe",
    "PRAGMA writable_schema = ON",
    "PRAGMA table_info(_cf_KV)",
    "PRAGMA table_xinfo(_CF_KV)",
    "PRAGMA index_list(_cf_KV)",
    "PRAGMA foreign_key_check(_cf_KV)",
    "PRAGMA quick_check(_cf_KV)",
    "PRAGMA optimize(banana)",
    "PRAGMA integrity_check",
    "PRAGMA compile_options",
    "PRAGMA function_list",
    "PRAGMA schema_version",
    "PRAGMA max_page_count = 1",
    "SELECT * FROM pragma_user_version",
    "SELECT * FROM pragma_table_info('_cf_KV')",
])
def test_pragmas_outside_the_allow_list_are_not_authorized(sql, query):
    assert denied(sql, query) == NOT_AUTHORIZED


@pytest.mark.parametrize("query", [
    "PRAGMA page_size",
    "PRAGMA data_version",
    "PRAGMA table_list",
    "PRAGMA table_info(t)",
    "PRAGMA table_xinfo(t)",
    "PRAGMA main.table_info(t)",
    "PRAGMA index_list(t)",
    "PRAGMA index_info(t_v)",
    "PRAGMA index_xinfo(t_v)",
    "PRAGMA foreign_key_list(t)",
    "PRAGMA foreign_key_check",
    "PRAGMA foreign_key_check(t)",
    "PRAGMA quick_check",
    "PRAGMA quick_check(10)",
    "PRAGMA quick_check(t)",
    "PRAGMA optimize",
    "PRAGMA optimize(65538)",
    "PRAGMA foreign_keys",
    "PRAGMA foreign_keys = OFF",
    "PRAGMA foreign_keys = on",
    "PRAGMA defer_foreign_keys = true",
    "PRAGMA defer_foreign_keys = 'no'",
    "PRAGMA case_sensitive_like = 1",
    "PRAGMA ignore_check_constraints = 0",
    "PRAGMA legacy_alter_table = off",
    "PRAGMA recursive_triggers = yes",
    "PRAGMA reverse_unordered_selects = false",
    "SELECT name FROM pragma_table_info('t')",
])
def test_allowed_pragmas(sql, query):
    sql(query)


def test_pragma_values(sql):
    assert sql("PRAGMA page_size").one().page_size == 4096
    assert sql("PRAGMA foreign_keys").one().foreign_keys == 1  # §13.5: on by default
    assert [r.name for r in sql("PRAGMA table_info(t)")] == ["id", "v"]
    assert sql("PRAGMA quick_check").one().quick_check == "ok"


# ---- functions ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["sqlite_version()", "sqlite_source_id()",
                                  "sqlite_compileoption_used('X')", "sqlite_compileoption_get(0)",
                                  "load_extension('x')", "fts3_tokenizer('simple')"])
def test_functions_outside_the_allow_list(sql, call):
    # SQLite reports a denied function with SQLITE_ERROR and the offset of the call, not
    # SQLITE_AUTH; the message is SQLite's own.
    name = call.split("(")[0]
    text = denied(sql, f"SELECT {call}")
    assert text == f"not authorized to use function: {name} at offset 7: SQLITE_ERROR"


def test_sqlite_version_text(sql):
    assert denied(sql, "SELECT sqlite_version()") == (
        "not authorized to use function: sqlite_version at offset 7: SQLITE_ERROR")
    assert denied(sql, "SELECT SQLITE_VERSION()").startswith("not authorized to use function: ")


def test_allowed_functions(sql):
    row = sql(
        "SELECT abs(-1) AS a, coalesce(NULL, 2) AS c, hex('a') AS h, instr('abc', 'b') AS i, "
        "length('abc') AS l, lower('A') AS lo, printf('%d', 5) AS p, quote('x') AS q, "
        "typeof(randomblob(2)) AS rb, replace('aa', 'a', 'b') AS r, round(1.26, 1) AS ro, "
        "substr('abc', 2) AS s, trim(' a ') AS t, upper('a') AS u, unhex('61') AS uh, "
        "length(zeroblob(3)) AS z, iif(1, 'y', 'n') AS y, concat('a', 'b') AS cc, "
        "date('2020-01-02') AS d, unixepoch('2020-01-01') AS ue, strftime('%Y', '2020-01-01') AS sf, "
        "sqrt(16) AS sq, pow(2, 3) AS pw, json_extract('{\"a\": 5}', '$.a') AS j, "
        "json_object('k', 1) AS jo, '{\"a\": 1}' ->> '$.a' AS arrow"
    ).one()
    assert row == {"a": 1, "c": 2, "h": "61", "i": 2, "l": 3, "lo": "a", "p": "5", "q": "'x'",
                   "rb": "blob", "r": "bb", "ro": 1.3, "s": "bc", "t": "a", "u": "A", "uh": b"a",
                   "z": 3, "y": "y", "cc": "ab", "d": "2020-01-02", "ue": 1577836800, "sf": "2020",
                   "sq": 4.0, "pw": 8.0, "j": 5, "jo": '{"k":1}', "arrow": 1}
    sql("INSERT INTO t(v) VALUES ('a'), ('b')")
    agg = sql("SELECT count(*) AS n, group_concat(v) AS g, max(id) AS mx, sum(id) AS sm, "
              "json_group_array(v) AS ja FROM t").one()
    assert agg == {"n": 2, "g": "a,b", "mx": 2, "sm": 3, "ja": '["a","b"]'}
    win = sql("SELECT v, row_number() OVER (ORDER BY v DESC) AS rn, lag(v) OVER (ORDER BY v) AS lg "
              "FROM t ORDER BY v").to_array()
    assert win == [{"v": "a", "rn": 2, "lg": None}, {"v": "b", "rn": 1, "lg": "a"}]
    assert [r.value for r in sql("SELECT value FROM json_each('[1, 2]')")] == [1, 2]
    rec = sql("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 4) "
              "SELECT sum(n) AS s FROM c").one()
    assert rec.s == 10


def test_ordinary_ddl_and_dml_are_allowed(sql):
    sql("CREATE TABLE p(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE)")
    sql("CREATE INDEX p_name ON p(name)")
    sql("CREATE VIEW pv AS SELECT name FROM p")
    sql("CREATE TRIGGER p_tr AFTER INSERT ON p BEGIN UPDATE t SET v = new.name WHERE id = 1; END")
    sql("INSERT INTO t VALUES (1, 'x')")
    sql("INSERT INTO p(name) VALUES ('n')")
    assert sql("SELECT v FROM t WHERE id = 1").one().v == "n"
    assert sql("SELECT name FROM pv").one().name == "n"
    assert sql("SELECT seq FROM sqlite_sequence WHERE name = 'p'").one().seq == 1
    sql("ANALYZE")
    sql("REINDEX p_name")
    sql("DROP TRIGGER p_tr; DROP VIEW pv; DROP INDEX p_name; DROP TABLE p")
