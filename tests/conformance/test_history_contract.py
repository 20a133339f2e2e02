"""The commit history's contract (:class:`duro.storage.durability.History`), run against every
implementation in ``conftest.HISTORIES`` on real files: records are readable at once and after a
reopen, bookmarks sort in commit order, ``resolve`` and ``for_time`` answer as documented, a torn
tail is ignored, and a record is synced before the database file can hold it."""

from __future__ import annotations

import pytest

from duro.errors import InvalidInputError
from duro.storage import ObjectDatabase
from duro.storage.durability import History
from duro.storage.journal import DAY_MS

from .conftest import HistoryCase
from .disk import DiskLog, real


@pytest.fixture
def path(tmp_path):
    return tmp_path / "do" / "ns" / "a.sqlite"


def put(db: ObjectDatabase, **kv) -> str:
    """Commit ``kv``; the bookmark of the new state."""
    for k, v in kv.items():
        db.kv_put(k, v)
    assert db.commit()
    return db.attached_history().current().bookmark


def test_it_is_a_history(history_case: HistoryCase, path) -> None:
    db = history_case.open(path)
    try:
        assert isinstance(db.attached_history(), History)
        assert db.attached_history().options == history_case.options
    finally:
        db.close()


def test_records_are_readable_at_once_and_after_a_reopen(history_case: HistoryCase, path) -> None:
    db = history_case.open(path)
    marks = []
    for i in range(5):
        history_case.clock.ms += 1000
        marks.append(put(db, n=i))
        assert db.attached_history().resolve(marks[-1]).bookmark == marks[-1]
    db.close()
    db = history_case.open(path)
    try:
        history = db.attached_history()
        assert history.current().bookmark == marks[-1]
        for mark in marks:
            rec = history.resolve(mark)
            assert rec.bookmark == mark
        assert [history.resolve(m).seq for m in marks] == sorted(history.resolve(m).seq for m in marks)
    finally:
        db.close()


@pytest.mark.parametrize("empty", [False, True], ids=["with-data", "emptied"])
def test_a_history_handed_off_at_close_keeps_every_record(history_case: HistoryCase, path, empty) -> None:
    jobs: list = []
    db = history_case.open(path, offload=jobs.append)  # the close finishes where the test says
    marks = [put(db, a=1), put(db, a=2)]
    if empty:
        db.delete_all()
        db.commit()
        marks.append(db.attached_history().current().bookmark)
    db.close(offload=True)
    assert len(jobs) == 1
    jobs.pop()()  # as a worker thread would: sync, checkpoint, (remove an empty database), close
    db = history_case.open(path)
    try:
        history = db.attached_history()
        assert [history.resolve(m).bookmark for m in marks] == marks
        if empty:
            assert history.current().db_pages == 0, "the emptied state was not recorded"
            assert db.kv_get("a") is None
        else:
            assert history.current().bookmark == marks[-1]
    finally:
        db.close()


def test_bookmarks_sort_in_commit_order(history_case: HistoryCase, path) -> None:
    db = history_case.open(path)
    try:
        marks = [db.attached_history().current().bookmark]
        for i in range(12):
            if i % 4 == 0:
                history_case.clock.ms += 1  # most of these commits share a millisecond
            marks.append(put(db, k=i))
        assert marks == sorted(marks) and len(set(marks)) == len(marks)
    finally:
        db.close()


def test_a_commit_that_changed_nothing_adds_no_record(history_case: HistoryCase, path) -> None:
    db = history_case.open(path)
    try:
        mark = put(db, a=1)
        db.kv_delete("missing")
        db.commit()
        assert db.attached_history().current().bookmark == mark
    finally:
        db.close()


def test_resolve_refuses_what_names_no_record(history_case: HistoryCase, path) -> None:
    db = history_case.open(path)
    try:
        mark = put(db, a=1)
        history = db.attached_history()
        with pytest.raises(InvalidInputError):
            history.resolve("not a bookmark")
        unknown = "%016x-%012x-%08x" % (999, history_case.clock.ms, 0)
        with pytest.raises(InvalidInputError):
            history.resolve(unknown)
        assert history.current().bookmark == mark, "bad input changed the history"
    finally:
        db.close()


def test_for_time_names_the_newest_record_at_or_before_it(history_case: HistoryCase, path) -> None:
    clock = history_case.clock
    start = clock.ms
    db = history_case.open(path)
    try:
        history = db.attached_history()
        empty = history.current()
        clock.ms += 1000
        b1 = put(db, a=1)
        t1 = clock.ms
        clock.ms += 1000
        b2 = put(db, a=2)
        clock.ms += 1000
        assert history.for_time(t1).bookmark == b1
        assert history.for_time(t1 + 500).bookmark == b1
        assert history.for_time(clock.ms).bookmark == b2
        # Before the first commit of an object that did not exist: its empty state.
        assert history.for_time(start - 1).seq == empty.seq == 0
        assert history.for_time(start - 1).db_pages == 0
        with pytest.raises(InvalidInputError, match="future"):
            history.for_time(clock.ms + 1)
        with pytest.raises(InvalidInputError, match="retention"):
            history.for_time(clock.ms - history_case.options.retention_ms - 1)
    finally:
        db.close()


def test_records_outside_the_retention_window_are_not_answered(history_case: HistoryCase, path) -> None:
    db = history_case.open(path)
    try:
        put(db, a=1)
        history_case.clock.ms += 31 * DAY_MS
        with pytest.raises(InvalidInputError):
            db.attached_history().for_time(history_case.clock.ms - 31 * DAY_MS)
    finally:
        db.close()


def test_a_torn_tail_is_ignored(history_case: HistoryCase, path) -> None:
    db = history_case.open(path)
    b1 = put(db, a=1)
    history_case.clock.ms += 1000
    put(db, a=2)
    db.close()
    history_case.tear(path)  # a power loss in the middle of the last append
    db = history_case.open(path)
    try:
        history = db.attached_history()
        assert history.resolve(b1).bookmark == b1
        # The history holds the database's state again (a new record if the torn one was it).
        assert db.kv_get("a") == 2
        assert history.current().bookmark > b1
        history_case.clock.ms += 1000
        b3 = put(db, a=3)
        assert b3 > history.resolve(b1).bookmark
    finally:
        db.close()
    db = history_case.open(path)
    try:
        assert db.attached_history().current().bookmark == b3
    finally:
        db.close()


def test_a_record_is_synced_before_a_checkpoint_and_not_on_the_commit_path(
        history_case: HistoryCase, disk: DiskLog, path) -> None:
    db = history_case.open(path)
    try:
        put(db, a=1)
        history = db.attached_history()
        history.sync()
        files = {real(p) for p in history_case.files(path)}
        disk.synced.clear()
        disk.datasynced.clear()
        put(db, a=2)
        assert not files & set(disk.synced + disk.datasynced), "the commit path synced the history"
        history.sync()
        assert files & set(disk.synced + disk.datasynced), "sync() did not make the record durable"
        n = len(disk.synced + disk.datasynced)
        history.sync()
        assert len(disk.synced + disk.datasynced) == n, "a sync with nothing new synced again"
        # For a checkpoint on another thread: the sync happens when the returned function runs.
        put(db, a=3)
        later = history.sync_later()
        disk.synced.clear()
        disk.datasynced.clear()
        later()
        assert files & set(disk.synced + disk.datasynced), "sync_later()() did not make the record durable"
    finally:
        db.close()
