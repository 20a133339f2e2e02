"""Point-in-time recovery on real files: bookmarks, restore, branch, materialise, healing, pruning."""

import datetime
import os
import pathlib
import shutil

import apsw
import pytest

from duro.codec import encode
from duro.errors import InvalidInputError, StorageError
from duro.storage import ObjectDatabase
from duro.storage import history as H
from duro.storage.journal import DAY_MS, HistoryFile, HistoryOptions, history_path, marker_path


class FakeClock:
    def __init__(self, ms: int = 1_700_000_000_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def opts(clock):
    return HistoryOptions(retention_ms=30 * DAY_MS, now_ms=clock)


@pytest.fixture
def path(tmp_path):
    return tmp_path / "do" / "ns" / "a.sqlite"


def state(path, opts=None):
    """Everything a user can observe: KV rows, alarm, user tables' schema and rows."""
    db = ObjectDatabase(path)
    try:
        if not db.port.open(create=False):
            return {}
        out = {"kv": db.kv_list(), "alarm": db.get_alarm()}
        for name, sql in db.port.run_internal("SELECT name, sql FROM sqlite_master WHERE type='table' AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\' ORDER BY name"):
            out[sql] = sorted(map(tuple, db.port.run_internal(f'SELECT * FROM "{name}"')))
        return {k: v for k, v in out.items() if v not in ({}, None)}
    finally:
        db.close()


def put(db, **kv):
    for k, v in kv.items():
        db.kv_put(k, v)
    db.commit()
    return db.attached_history().current().bookmark


def test_bookmarks_are_well_formed_and_sort_in_commit_order(path, opts, clock):
    db = ObjectDatabase(path, history=opts)
    marks = [db.attached_history().current().bookmark]
    for i in range(20):
        clock.ms += 1 if i % 3 else 0
        marks.append(put(db, k=i))
    db.close()
    assert marks == sorted(marks) and len(set(marks)) == len(marks)
    for b in marks:
        assert len(b) == 38 and b.count("-") == 2


def test_restore_brings_back_each_state_and_can_be_undone(path, opts, clock):
    db = ObjectDatabase(path, history=opts)
    b0 = db.attached_history().current().bookmark
    b1 = put(db, a=1)
    db.sql.exec("CREATE TABLE t(x INTEGER PRIMARY KEY, y)")
    db.sql.exec("INSERT INTO t VALUES (1, 'one')")
    db.set_alarm(42)
    db.commit()
    b2 = db.attached_history().current().bookmark
    db.close()
    s2 = state(path)
    assert s2["alarm"] == 42
    r = H.restore(path, b1, options=opts)
    assert state(path) == {"kv": {"a": 1}}
    assert r > b2  # the restore is a new point in history
    H.restore(path, b2, options=opts)  # undo
    assert state(path) == s2
    H.restore(path, b0, options=opts)
    assert state(path) == {} and not path.exists()
    assert H.current_bookmark(path, options=opts) > r


def test_writes_after_a_restore_continue_the_history(path, opts):
    db = ObjectDatabase(path, history=opts)
    b1 = put(db, a=1)
    put(db, a=2)
    db.close()
    H.restore(path, b1, options=opts)
    db = ObjectDatabase(path, history=opts)
    assert db.kv_get("a") == 1
    b3 = put(db, b=3)
    db.close()
    assert state(path) == {"kv": {"a": 1, "b": 3}}
    H.restore(path, b1, options=opts)
    assert state(path) == {"kv": {"a": 1}}
    H.restore(path, b3, options=opts)
    assert state(path) == {"kv": {"a": 1, "b": 3}}


def test_delete_all_keeps_history_and_records_the_empty_state(path, opts):
    db = ObjectDatabase(path, history=opts)
    b1 = put(db, a=1)
    db.delete_all()
    db.commit()
    assert db.discard_files_if_empty()
    assert not path.exists() and history_path(path).exists()
    empty = db.attached_history().current().bookmark
    assert empty > b1
    db.close()
    H.restore(path, b1, options=opts)
    assert state(path) == {"kv": {"a": 1}}
    H.restore(path, empty, options=opts)
    assert state(path) == {}


def test_bookmark_for_time(path, opts, clock):
    t0 = clock.ms
    db = ObjectDatabase(path, history=opts)
    b = {}
    for i in range(5):
        clock.ms = t0 + 1000 * (i + 1)
        b[i] = put(db, n=i)
    db.close()
    assert H.bookmark_for_time(path, t0 + 3500, options=opts) == b[2]
    assert H.bookmark_for_time(path, t0 + 3000, options=opts) == b[2]
    when = datetime.datetime.fromtimestamp((t0 + 1500) / 1000, datetime.timezone.utc)
    assert H.bookmark_for_time(path, when, options=opts) == b[0]
    # Before the object existed: its state was empty (the history's seq-0 base).
    first, _ = H.bookmark_range(path, options=opts)
    assert H.bookmark_for_time(path, t0 - 1000, options=opts) == first
    with pytest.raises(InvalidInputError, match="in the future"):
        H.bookmark_for_time(path, clock.ms + 60_000, options=opts)
    with pytest.raises(InvalidInputError, match="outside the retention window"):
        H.bookmark_for_time(path, clock.ms - 31 * DAY_MS, options=opts)
    with pytest.raises(TypeError):
        H.bookmark_for_time(path, "yesterday", options=opts)


@pytest.mark.parametrize("bad", ["", "nope", "0000000000000001-018c2b3f4e5a", "0000000000000001-018c2b3f4e5a-XYZ00000",
                                 "0000000000000001-018C2B3F4E5A-00000000", 12, None])
def test_malformed_bookmarks_are_refused_and_change_nothing(path, opts, bad):
    db = ObjectDatabase(path, history=opts)
    put(db, a=1)
    db.close()
    before = (path.read_bytes(), history_path(path).read_bytes())
    with pytest.raises(InvalidInputError, match="^Invalid bookmark: "):
        H.restore(path, bad, options=opts)
    with pytest.raises(InvalidInputError, match="^Invalid bookmark: "):
        H.materialize(path, bad, path.with_name("out.sqlite"), options=opts)
    assert (path.read_bytes(), history_path(path).read_bytes()) == before


def test_unknown_bookmarks_are_refused(path, opts, tmp_path):
    db = ObjectDatabase(path, history=opts)
    b1 = put(db, a=1)
    db.close()
    other = tmp_path / "b.sqlite"
    db = ObjectDatabase(other, history=opts)
    foreign = put(db, a=2)
    db.close()
    seq, ms, tag = b1.split("-")
    for bad in (foreign, f"{seq}-{ms}-{int(tag, 16) ^ 1:08x}", f"{int(seq, 16) + 99:016x}-{ms}-{tag}"):
        with pytest.raises(InvalidInputError, match="does not name a point in this object's history"):
            H.restore(path, bad, options=opts)
    assert state(path) == {"kv": {"a": 1}}


def test_branch_and_materialize(path, opts, tmp_path):
    db = ObjectDatabase(path, history=opts)
    b1 = put(db, a=1)
    put(db, a=2)
    db.close()
    dst = tmp_path / "do" / "ns" / "b.sqlite"
    first = H.branch(path, dst, b1, options=opts)
    assert state(dst) == {"kv": {"a": 1}} and state(path) == {"kv": {"a": 2}}
    assert H.bookmark_range(dst, options=opts) == (first, first)
    db = ObjectDatabase(dst, history=opts)
    put(db, c=3)
    db.close()
    H.restore(dst, first, options=opts)
    assert state(dst) == {"kv": {"a": 1}}
    with pytest.raises(InvalidInputError, match="already has data"):
        H.branch(path, dst, b1, options=opts)
    out = tmp_path / "copy.sqlite"
    assert H.materialize(path, b1, out, options=opts) > 0
    assert state(out) == {"kv": {"a": 1}}
    assert state(path) == {"kv": {"a": 2}}


def test_scheduled_restore_applies_on_next_open_only(path, opts):
    db = ObjectDatabase(path, history=opts)
    b1 = put(db, a=1)
    put(db, a=2)
    H.schedule_restore(path, b1)
    assert db.kv_get("a") == 2  # this session is unchanged
    db.close()
    db = ObjectDatabase(path, history=opts)
    assert db.kv_get("a") == 1 and not marker_path(path).exists()
    db.close()


def test_a_scheduled_restore_that_cannot_be_done_is_dropped_with_an_error(path, opts):
    db = ObjectDatabase(path, history=opts)
    b1 = put(db, a=1)
    db.close()
    seq, ms, tag = b1.split("-")
    H.schedule_restore(path, f"{seq}-{ms}-{int(tag, 16) ^ 1:08x}")
    db = ObjectDatabase(path, history=opts)
    with pytest.raises(StorageError, match="was not done and has been dropped"):
        db.kv_get("a")
    assert db.kv_get("a") == 1  # the next open works
    db.close()


def _drop_last_record(path):
    hf = HistoryFile.open(history_path(path))
    cut = hf.record(-1).offset
    hf.close()
    os.truncate(history_path(path), cut)


def test_history_heals_after_missed_commits(path, opts):
    db = ObjectDatabase(path, history=opts)
    b1 = put(db, a=1)
    b2 = put(db, a=2)
    db.close()
    _drop_last_record(path)  # as after a crash between the commit and its history append
    healed = H.current_bookmark(path, options=opts)
    assert healed > b1 and healed != b2
    H.restore(path, b1, options=opts)
    assert state(path) == {"kv": {"a": 1}}
    H.restore(path, healed, options=opts)
    assert state(path) == {"kv": {"a": 2}}
    db = ObjectDatabase(path, history=opts)
    db.kv_put("b", 1)
    db.commit()
    db.close()
    assert state(path) == {"kv": {"a": 2, "b": 1}}


def test_the_last_record_read_at_open_is_reused_once_and_never_stale(path, opts):
    """HistoryFile.open keeps the small last record it read and checked, for one read_body of that
    record (an object's wake compares its pages with the database); any write drops it."""
    db = ObjectDatabase(path, history=opts)
    put(db, a=1)
    put(db, a=2)
    db.close()
    hf = HistoryFile.open(history_path(path))
    try:
        last = hf.last
        from_memory = hf.read_body(last)
        assert hf._tail_blob is None  # used once
        assert hf.read_body(last) == from_memory  # the same bytes, read from the file
        hf.close()
        hf = HistoryFile.open(history_path(path))
        other = hf.record(0)
        assert hf.read_body(other) != from_memory and hf._tail_blob is None  # another record: dropped
        hf.close()
        hf = HistoryFile.open(history_path(path))
        rec = hf.append(hf.last.seq + 1, hf.last.ms, hf.last.db_pages, {1: bytes(4096)})
        assert hf._tail_blob is None  # a write drops it
        assert list(hf.iter_pages(rec)) == [(1, bytes(4096))]
    finally:
        hf.close()


def test_a_last_record_the_database_lacks_is_still_found_at_open(path, opts, tmp_path):
    """The page comparison at open (_holds) still reads the last record's pages: a history ahead
    of its database (the commit's WAL frames lost) is healed, not taken as in step."""
    db = ObjectDatabase(path, history=opts)
    put(db, a=1)
    db.close()
    before = path.read_bytes()
    db = ObjectDatabase(path, history=opts)
    b2 = put(db, a=2)
    db.close()
    path.write_bytes(before)  # the database without the last commit, its history with it
    pathlib.Path(str(path) + "-wal").unlink(missing_ok=True)
    db = ObjectDatabase(path, history=opts)
    assert db.kv_get("a") == 1
    healed = db.attached_history().current().bookmark
    db.close()
    assert healed > b2  # a new base (HEAL) records the state the database really has
    assert state(path)["kv"] == {"a": 1}


def _crash_image(path, to):
    """The object's files as a crash would leave them: database and WAL as they are on disk now
    (the connection still open, nothing checkpointed), the history as given."""
    to.mkdir()
    for suffix in ("", "-wal"):
        src = pathlib.Path(str(path) + suffix)
        if src.exists():
            shutil.copyfile(src, pathlib.Path(str(to / path.name) + suffix))
    shutil.copyfile(history_path(path), history_path(to / path.name))
    return to / path.name


def test_a_crash_between_commit_and_history_append_is_healed(path, opts, tmp_path):
    db = ObjectDatabase(path, history=opts)
    b1 = put(db, a=1)
    db.history.after_commit = lambda got: None  # the process dies right after COMMIT
    db.kv_put("a", 2)
    db.commit()
    image = _crash_image(path, tmp_path / "crash")
    db.history.after_commit = type(db.history).after_commit.__get__(db.history)
    cur = H.current_bookmark(image, options=opts)
    assert cur > b1
    H.restore(image, b1, options=opts)
    assert state(image) == {"kv": {"a": 1}}
    H.restore(image, cur, options=opts)
    assert state(image) == {"kv": {"a": 2}}
    db.close()


def test_a_crashed_commit_on_other_pages_is_found_in_the_wal(path, opts, tmp_path):
    db = ObjectDatabase(path, history=opts)
    for i in range(200):
        db.kv_put(f"k{i:03}", "x" * 200)  # many leaf pages
    db.commit()
    b1 = put(db, k000="first leaf")
    db.history.after_commit = lambda got: None
    db.kv_put("k199", "last leaf")  # a page the last record does not hold
    db.commit()
    image = _crash_image(path, tmp_path / "crash")
    db.history.after_commit = type(db.history).after_commit.__get__(db.history)
    cur = H.current_bookmark(image, options=opts)
    assert cur > b1
    H.restore(image, b1, options=opts)
    assert state(image)["kv"]["k199"] == "x" * 200
    H.restore(image, cur, options=opts)
    assert state(image)["kv"]["k199"] == "last leaf"
    db.close()


def test_a_lost_history_tail_with_the_commits_in_the_wal_is_healed(path, opts, tmp_path):
    db = ObjectDatabase(path, history=opts)
    b1 = put(db, a=1)
    put(db, b=2)
    put(db, c=3)
    hf = HistoryFile.open(history_path(path))
    cut = hf.record(-2).offset
    hf.close()
    image = _crash_image(path, tmp_path / "crash")
    os.truncate(history_path(image), cut)  # a power loss kept the WAL, not the history's tail
    cur = H.current_bookmark(image, options=opts)
    H.restore(image, b1, options=opts)
    assert state(image) == {"kv": {"a": 1}}
    H.restore(image, cur, options=opts)
    assert state(image) == {"kv": {"a": 1, "b": 2, "c": 3}}
    db.close()


def test_a_database_marked_changed_outside_is_healed(path, opts):
    db = ObjectDatabase(path, history=opts)
    b1 = put(db, a=1)
    db.close()
    conn = apsw.Connection(str(path))  # a tool writes, and marks the database as changed outside
    conn.execute("BEGIN; INSERT INTO _cf_KV VALUES ('outside', ?); PRAGMA user_version = 7; COMMIT", (encode(1),))
    conn.close()
    cur = H.current_bookmark(path, options=opts)
    assert cur > b1
    H.restore(path, b1, options=opts)
    assert "outside" not in state(path)["kv"]
    H.restore(path, cur, options=opts)
    assert "outside" in state(path)["kv"]
    conn = apsw.Connection(str(path))
    assert conn.execute("PRAGMA user_version").fetchall()[0][0] == 0
    conn.close()


def test_writes_made_with_history_off_are_noticed(path, opts):
    db = ObjectDatabase(path, history=opts)
    for i in range(200):
        db.kv_put(f"k{i:03}", "x" * 200)
    db.commit()
    b1 = put(db, k000="on")
    db.close()
    off = ObjectDatabase(path)  # history_retention = 0 for a while
    off.kv_put("k199", "off")  # a page the last record does not hold
    off.commit()
    off.close()
    cur = H.current_bookmark(path, options=opts)
    assert cur > b1
    H.restore(path, b1, options=opts)
    assert state(path)["kv"]["k199"] == "x" * 200
    H.restore(path, cur, options=opts)
    assert state(path)["kv"]["k199"] == "off"


def test_history_heals_when_the_database_is_replaced(path, opts, tmp_path):
    db = ObjectDatabase(path, history=opts)
    b1 = put(db, a=1)
    db.close()
    other = tmp_path / "other.sqlite"
    plain = ObjectDatabase(other)
    for i in range(300):
        plain.kv_put(f"k{i}", "x" * 100)
    plain.commit()
    plain.close()
    os.replace(other, path)  # e.g. an import
    cur = H.current_bookmark(path, options=opts)
    assert cur > b1
    H.restore(path, b1, options=opts)
    assert state(path) == {"kv": {"a": 1}}
    H.restore(path, cur, options=opts)
    assert len(state(path)["kv"]) == 300


def test_existing_database_without_history_gets_a_base(path, opts, clock):
    plain = ObjectDatabase(path)
    plain.kv_put("a", 1)
    plain.commit()
    plain.close()
    db = ObjectDatabase(path, history=opts)
    b0 = db.attached_history().current().bookmark
    put(db, a=2)
    db.close()
    H.restore(path, b0, options=opts)
    assert state(path) == {"kv": {"a": 1}}
    with pytest.raises(InvalidInputError, match="before this object's history"):
        H.bookmark_for_time(path, clock.ms - 1000, options=opts)


def test_a_torn_history_tail_is_cut_off_and_healed(path, opts):
    db = ObjectDatabase(path, history=opts)
    b1 = put(db, a=1)
    put(db, a=2)
    db.close()
    hp = history_path(path)
    with open(hp, "r+b") as f:
        f.truncate(os.path.getsize(hp) - 10)  # the last record is torn
    cur = H.current_bookmark(path, options=opts)
    assert cur > b1
    H.restore(path, b1, options=opts)
    assert state(path) == {"kv": {"a": 1}}
    H.restore(path, cur, options=opts)
    assert state(path) == {"kv": {"a": 2}}


def test_read_only_transactions_write_nothing(path, opts):
    db = ObjectDatabase(path, history=opts)
    put(db, a=1)
    size = os.path.getsize(history_path(path))
    assert db.kv_get("a") == 1
    db.kv_list()
    assert db.commit() is False
    assert os.path.getsize(history_path(path)) == size
    db.close()


def test_write_transactions_that_change_nothing_make_no_record(path, opts):
    db = ObjectDatabase(path, history=opts)
    b1 = put(db, a=1)
    for _ in range(3):
        db.kv_delete("missing")  # a write statement that matches nothing: no page changes
        db.sql.exec("CREATE TABLE IF NOT EXISTS t(x)") if _ == 2 else None
        db.commit()
    b2 = db.attached_history().current().bookmark
    db.sql.exec("DELETE FROM t WHERE x = 1")
    db.commit()
    assert db.attached_history().current().bookmark == b2 > b1
    # a rolled-back transaction that spilled pages to the WAL, then a no-op write
    for i in range(3000):
        db.kv_put(f"big{i}", "y" * 1000)
    db.rollback()
    db.kv_delete("missing")
    db.commit()
    b3 = put(db, c=3)
    db.close()
    H.restore(path, b2, options=opts)
    assert state(path)["kv"] == {"a": 1}
    H.restore(path, b3, options=opts)
    assert state(path)["kv"] == {"a": 1, "c": 3}


def test_a_reader_of_a_missing_object_creates_no_files(path, opts):
    db = ObjectDatabase(path, history=opts)
    assert db.kv_get("a") is None
    db.close()
    assert not path.parent.exists() or not any(path.parent.iterdir())
    assert H.current_bookmark(path, options=opts) is None
    assert H.bookmark_range(path, options=opts) is None


def test_large_transactions_and_wal_restarts_are_captured(path, opts):
    db = ObjectDatabase(path, history=opts)
    marks = []
    for round_ in range(6):
        for i in range(400):
            db.kv_put(f"k{i}", os.urandom(900).hex() if i % 7 else round_)
        db.commit()  # ~1,500 pages per round: spills the page cache and restarts the WAL
        marks.append((db.attached_history().current().bookmark, dict(db.kv_list())))
        for i in range(5):
            db.kv_delete(f"k{i * 50 + round_}")
            db.commit()
    db.close()
    for b, expected in marks[::-1]:
        H.restore(path, b, options=opts)
        assert state(path)["kv"] == expected


def test_many_small_commits_checkpoint_and_restart_the_wal(path, opts):
    db = ObjectDatabase(path, history=opts)
    marks = {}
    for i in range(2500):
        db.kv_put(f"k{i % 300}", i)
        db.commit()
        if i % 500 == 250:
            marks[db.attached_history().current().bookmark] = dict(db.kv_list())
    wal = pathlib.Path(str(path) + "-wal")
    assert wal.stat().st_size < 1100 * 4120  # the history's checkpoints keep the WAL bounded
    db.close()
    for b, expected in marks.items():
        H.restore(path, b, options=opts)
        assert state(path)["kv"] == expected


def test_pruning_keeps_the_window_and_rebases(path, opts, clock):
    db = ObjectDatabase(path, history=opts)
    empty = db.attached_history().current().bookmark
    old = put(db, a=1)
    clock.ms += 10 * DAY_MS
    mid = put(db, a=2)
    clock.ms += 25 * DAY_MS
    new = put(db, a=3)
    db.close()
    size_before = os.path.getsize(history_path(path))
    assert H.prune(path, options=opts)
    assert not H.prune(path, options=opts)  # nothing more to drop
    first, last = H.bookmark_range(path, options=opts)
    # The state at the window's start (old) is kept as the new base, with its own bookmark;
    # the empty state before it is gone.
    assert first == old and last == new
    assert os.path.getsize(history_path(path)) < size_before
    with pytest.raises(InvalidInputError, match="older than this object's history"):
        H.restore(path, empty, options=opts)
    H.restore(path, old, options=opts)
    assert state(path) == {"kv": {"a": 1}}
    H.restore(path, mid, options=opts)
    assert state(path) == {"kv": {"a": 2}}
    H.restore(path, new, options=opts)
    assert state(path) == {"kv": {"a": 3}}


def test_pruning_removes_the_history_of_an_object_long_empty(path, opts, clock):
    db = ObjectDatabase(path, history=opts)
    put(db, a=1)
    db.delete_all()
    db.commit()
    db.close()
    assert history_path(path).exists() and not path.exists()
    clock.ms += 31 * DAY_MS
    assert H.prune(path, options=opts)
    assert not history_path(path).exists()


def test_pruning_a_live_history(path, opts, clock):
    db = ObjectDatabase(path, history=opts)
    b1 = put(db, a=1)
    clock.ms += 31 * DAY_MS
    mid = put(db, a=2)
    clock.ms += 1
    assert H.prune(path, live=db.history)
    b3 = put(db, a=3)  # appends to the new file
    db.close()
    assert H.bookmark_range(path, options=opts) == (b1, b3)
    H.restore(path, b1, options=opts)
    assert state(path) == {"kv": {"a": 1}}
    H.restore(path, mid, options=opts)
    assert state(path) == {"kv": {"a": 2}}


def test_history_file_format_detects_foreign_files(tmp_path):
    p = tmp_path / "x.history"
    p.write_bytes(b"not a history file at all, sorry" * 2)
    with pytest.raises(StorageError, match="not a duro history file"):
        HistoryFile.open(p)
    p.write_bytes(b"")  # created, then a crash before its header was written
    hf = HistoryFile.open(p)
    assert hf is not None and hf.last is None
    hf.close()
    with pytest.raises(TypeError, match="finite"):
        H.to_epoch_ms(float("inf"))


def test_history_is_a_physical_copy(path, opts):
    """The database restored at the latest bookmark is page-for-page the live one."""
    db = ObjectDatabase(path, history=opts)
    db.sql.exec("CREATE TABLE t(x)")
    for i in range(50):
        db.sql.exec("INSERT INTO t VALUES (?)", "x" * i * 40)
        db.commit()
    b = db.attached_history().current().bookmark
    db.close()
    out = path.with_name("copy.sqlite")
    H.materialize(path, b, out, options=opts)
    conn = apsw.Connection(str(path))
    conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
    conn.close()
    assert out.read_bytes() == path.read_bytes()
