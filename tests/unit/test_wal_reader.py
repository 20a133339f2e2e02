"""The reader that follows an object's WAL for the journal and the history reads through the
descriptor SQLite already holds for it: one descriptor fewer per busy open object. Real files."""

import os

from duro.storage import ObjectDatabase
from duro.storage import history as H
from duro.storage.journal import HistoryOptions, WalTail
from duro.storage.opening import wal_descriptor


def _fds_on(path):
    """Descriptors this process holds on ``path``."""
    out = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                out += 1
        except OSError:
            pass
    return out


def test_a_busy_object_holds_one_descriptor_on_its_wal(tmp_path):
    path = tmp_path / "o.sqlite"
    db = ObjectDatabase(path, history=HistoryOptions())
    db.kv_put("a", 1)
    assert db.commit() is True
    wal = path.with_name("o.sqlite-wal")
    assert db.port._tail.borrowed
    assert _fds_on(wal) == 1  # SQLite's; the reader opened none of its own
    marks = [db.attached_history().current().bookmark]
    for i in range(20):
        db.kv_put(f"k{i}", os.urandom(5000))  # overflow pages: several frames a commit
        assert db.commit() is True
        marks.append(db.attached_history().current().bookmark)
    assert _fds_on(wal) == 1
    db.port.release_fds()
    assert db.port._tail.borrowed and _fds_on(wal) == 1  # SQLite's stays; nothing to give back
    db.close()
    assert _fds_on(wal) == 0
    # What the reader captured is exact: every bookmark restores its state.
    for i, bm in enumerate(marks):
        H.restore(path, bm)
        db = ObjectDatabase(path, history=HistoryOptions())
        assert len(db.kv_list()) == i + 1
        db.close()


def test_the_descriptor_is_only_lent_when_it_is_the_wal_s(tmp_path):
    import apsw
    conn = apsw.Connection(str(tmp_path / "x.sqlite"))
    try:
        conn.execute("PRAGMA journal_mode=WAL; CREATE TABLE t(a); INSERT INTO t VALUES (1)").fetchall()
        fd = wal_descriptor(conn, tmp_path / "x.sqlite-wal")
        assert fd >= 0 and os.readlink(f"/proc/self/fd/{fd}") == str(tmp_path / "x.sqlite-wal")
        (tmp_path / "other").write_bytes(b"")
        assert wal_descriptor(conn, tmp_path / "other") == -1  # another file: not lent
        assert wal_descriptor(conn, tmp_path / "missing") == -1
    finally:
        conn.close()


def test_without_a_lent_descriptor_the_reader_uses_its_own_and_gives_it_back(tmp_path):
    path = tmp_path / "o.sqlite"
    db = ObjectDatabase(path, history=HistoryOptions())
    db.kv_put("a", 1)
    db.commit()
    tail = db.port._tail
    tail.lend(lambda: -1)  # as if SQLite's could not be had
    db.kv_put("b", 2)
    assert db.commit() is True
    wal = path.with_name("o.sqlite-wal")
    assert not tail.borrowed and _fds_on(wal) == 2
    db.port.release_fds()
    assert _fds_on(wal) == 1
    db.kv_put("c", 3)
    assert db.commit() is True
    db.close()
    assert _fds_on(wal) == 0
    assert isinstance(tail, WalTail)


def test_a_commit_whose_frames_cannot_be_read_back_is_refused_not_acknowledged(tmp_path):
    """With the node journal a commit is durable only through its record: a commit that wrote WAL
    frames the reader then did not find (a fault) fails, instead of passing with no record."""
    import pytest

    from duro.errors import StorageError
    from duro.runtime.nodejournal import NodeJournal

    path = tmp_path / "do" / "o.sqlite"
    path.parent.mkdir()
    journal = NodeJournal(tmp_path)
    db = ObjectDatabase(path, history=HistoryOptions(), journal=journal.link(path))
    try:
        db.kv_put("a", 1)
        assert db.commit() is True
        assert db.port.captured is not None and db.port.captured.pages  # read back: the journal gets it
        db.port._tail.read_commit = lambda upto=0: None  # the reader finds nothing where SQLite wrote frames
        # A transaction that changed no page writes no frame: nothing to read, nothing refused.
        db.kv_delete("missing")
        db.commit()
        db.kv_put("b", 2)
        with pytest.raises(StorageError, match="could not be read back"):
            db.commit()
    finally:
        db.close()


def test_a_reader_reset_while_the_wal_holds_commits_still_captures_the_last_one(tmp_path):
    """The reader starts over from the WAL's first frame when it is reset (a new descriptor lent);
    SQLite's WAL hook says where the WAL ends, so the capture is the last commit's state, not the
    first commit it meets: the history's last record restores with every write in it."""
    path = tmp_path / "o.sqlite"
    db = ObjectDatabase(path, history=HistoryOptions())
    db.kv_put("a", 1)
    assert db.commit() is True
    db.kv_put("b", 2)
    assert db.commit() is True
    db.port._tail.lend(lambda: -1)  # reset: the WAL still holds both commits
    db.kv_put("c", 3)
    assert db.commit() is True
    assert db.port._tail.frames == db.port._wal_pages
    bookmark = db.attached_history().current().bookmark
    db.close()
    H.restore(path, bookmark)
    db = ObjectDatabase(path, history=HistoryOptions())
    try:
        assert sorted(db.kv_list()) == ["a", "b", "c"]
    finally:
        db.close()
