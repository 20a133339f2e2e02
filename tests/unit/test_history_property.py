"""Property: after any sequence of writes, restoring to any bookmark taken along the way gives back
exactly the database as it was when the bookmark was taken (schema, every table's rows including
the KV table, and the alarm)."""

import itertools
import pathlib
import shutil

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from duro.storage import ObjectDatabase
from duro.storage import history as H
from duro.storage.journal import HistoryOptions, history_path

_counter = itertools.count()

keys = st.sampled_from(["a", "b", "c", "d", "e"])
values = st.one_of(st.integers(-5, 5), st.text(max_size=5), st.binary(min_size=0, max_size=3000))
tables = st.sampled_from(["t1", "t2"])

ops = st.one_of(
    st.tuples(st.just("put"), keys, values),
    st.tuples(st.just("delete"), keys),
    st.tuples(st.just("create"), tables),
    st.tuples(st.just("insert"), tables, st.integers(0, 20), st.binary(max_size=2000)),
    st.tuples(st.just("update"), tables, st.integers(0, 20)),
    st.tuples(st.just("drop"), tables),
    st.tuples(st.just("alter"), tables),
    st.tuples(st.just("delete_all")),
    st.tuples(st.just("set_alarm"), st.integers(1, 10**12)),
    st.tuples(st.just("delete_alarm")),
    st.tuples(st.just("commit")),
    st.tuples(st.just("bookmark")),
    st.tuples(st.just("reopen")),
    st.tuples(st.just("crash"), st.booleans()),
)


def snapshot(db: ObjectDatabase) -> dict:
    """The full observable state, read through duro's own (unrestricted) statements."""
    if not db.port.open(create=False):
        return {}
    out = {}
    for name, sql in db.port.run_internal("SELECT name, sql FROM sqlite_master WHERE type IN ('table', 'index') "
                                          "AND name NOT LIKE 'sqlite_%' AND name <> '_cf_METADATA' ORDER BY name"):
        out[name] = sql
        if sql and sql.upper().startswith("CREATE TABLE"):
            out[name + " rows"] = sorted(map(tuple, db.port.run_internal(f'SELECT * FROM "{name}"')), key=repr)
    out["alarm"] = db.get_alarm()
    return {k: v for k, v in out.items() if v not in ([], None)}


def crash_image(path: pathlib.Path, to: pathlib.Path) -> pathlib.Path:
    """Copies of the database, its WAL and its history as they are on disk now (no checkpoint)."""
    for suffix in ("", "-wal"):
        src = pathlib.Path(str(path) + suffix)
        if src.exists():
            shutil.copyfile(src, pathlib.Path(str(to / path.name) + suffix))
    if history_path(path).exists():
        shutil.copyfile(history_path(path), history_path(to / path.name))
    return to / path.name


def apply(db: ObjectDatabase, op: tuple) -> None:
    kind = op[0]
    exists = lambda t: db.port.open(create=False) and db.port.run_internal(  # noqa: E731
        "SELECT 1 FROM sqlite_master WHERE name = ?", (t,))
    if kind == "put":
        db.kv_put(op[1], op[2])
    elif kind == "delete":
        db.kv_delete(op[1])
    elif kind == "create" and not exists(op[1]):
        db.sql.exec(f"CREATE TABLE {op[1]} (id INTEGER PRIMARY KEY, v BLOB)")
        db.sql.exec(f"CREATE INDEX {op[1]}_v ON {op[1]}(v)")
    elif kind == "insert" and exists(op[1]):
        db.sql.exec(f"INSERT OR REPLACE INTO {op[1]} (id, v) VALUES (?, ?)", op[2], op[3])
    elif kind == "update" and exists(op[1]):
        db.sql.exec(f"UPDATE {op[1]} SET v = zeroblob(?) WHERE id <= ?", op[2] * 100, op[2])
    elif kind == "drop" and exists(op[1]):
        db.sql.exec(f"DROP TABLE {op[1]}")
    elif kind == "alter" and exists(op[1]):
        col = f"c{next(_counter)}"
        db.sql.exec(f"ALTER TABLE {op[1]} ADD COLUMN {col} TEXT DEFAULT 'x'")
    elif kind == "delete_all":
        db.delete_all()
        db.commit()
        db.discard_files_if_empty()  # what the runtime does once the deleteAll is durable
    elif kind == "set_alarm":
        db.set_alarm(op[1])
    elif kind == "delete_alarm":
        db.delete_alarm()
    elif kind == "commit":
        db.commit()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=st.lists(ops, min_size=1, max_size=40), rnd=st.randoms(use_true_random=False))
def test_restore_to_any_bookmark_gives_back_that_state(tmp_path_factory, script, rnd):
    check(tmp_path_factory, script, rnd)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(st.lists(ops, min_size=1, max_size=6), min_size=2, max_size=8),
       rnd=st.randoms(use_true_random=False))
def test_restore_after_crashes_that_lost_history_appends(tmp_path_factory, chunks, rnd):
    """Every few writes the process dies right after a commit, before its history append; each
    time the object goes on from the files as the crash left them."""
    script = []
    for chunk in chunks:
        script += chunk + [("crash", True), ("bookmark",)]
    check(tmp_path_factory, script, rnd)


def check(tmp_path_factory, script, rnd):
    path = tmp_path_factory.mktemp("prop") / "obj.sqlite"
    clock = itertools.count(1_700_000_000_000, 7)
    opts = HistoryOptions(now_ms=lambda: next(clock))
    db = ObjectDatabase(path, history=opts)
    marks = [(db.attached_history().current().bookmark, {})]
    for op in script:
        if op[0] == "bookmark":
            db.commit()
            marks.append((db.attached_history().current().bookmark, snapshot(db)))
        elif op[0] == "reopen":
            db.commit()
            db.close()
            db = ObjectDatabase(path, history=opts)
        elif op[0] == "crash":
            # The process dies after a commit (before its history append, if op[1]); carry on from
            # the files as the crash left them.
            if op[1]:
                db.history.after_commit = lambda got: None
            db.commit()
            path = crash_image(path, tmp_path_factory.mktemp("crash"))
            db.history.after_commit = lambda got: None
            db.close()
            db = ObjectDatabase(path, history=opts)
        else:
            apply(db, op)
    db.commit()
    marks.append((db.attached_history().current().bookmark, snapshot(db)))
    db.close()
    assert [b for b, _ in marks] == sorted(b for b, _ in marks)
    rnd.shuffle(marks)  # every bookmark, in random order: each restore starts from another state
    for bookmark, expected in marks:
        H.restore(path, bookmark, options=opts)
        db = ObjectDatabase(path, history=opts)
        assert snapshot(db) == expected
        # A restore is a new point in history: writing after it and restoring again works too.
        db.kv_put("after-restore", 1)
        db.commit()
        db.close()
