"""Periodic WAL checkpoints run through ``offload`` (a worker thread in the runtime), never inside
COMMIT on the caller's thread; data and history stay exact across them."""

import os
import threading

import pytest

from duro.storage import ObjectDatabase
from duro.storage import history as H
from duro.storage.database import CHECKPOINT_PAGES
from duro.storage.journal import HistoryOptions


class ThreadOffload:
    def __init__(self):
        self.jobs = 0
        self.threads = []
        self.callers = set()

    def __call__(self, job):
        self.jobs += 1
        self.callers.add(threading.get_ident())
        t = threading.Thread(target=job)
        self.threads.append(t)
        t.start()

    def join(self):
        for t in self.threads:
            t.join(10)


@pytest.mark.parametrize("with_history", [False, True])
def test_checkpoints_are_offloaded_and_lose_nothing(tmp_path, with_history):
    path = tmp_path / "o.sqlite"
    offload = ThreadOffload()
    db = ObjectDatabase(path, offload=offload, history=HistoryOptions() if with_history else None)
    bookmarks = []
    value = os.urandom(3000)
    n = CHECKPOINT_PAGES + 400  # each commit writes at least one fresh page
    for i in range(n):
        db.kv_put(f"k{i:05d}", value)
        assert db.commit() is True
        if with_history and i % 500 == 0:
            bookmarks.append((i, db.attached_history().current().bookmark))
    offload.join()
    assert offload.jobs >= 1
    assert offload.callers == {threading.get_ident()}  # scheduled from here, run elsewhere
    assert path.stat().st_size > CHECKPOINT_PAGES * 4096 // 2  # pages reached the database file
    db.close()
    db = ObjectDatabase(path, history=HistoryOptions() if with_history else None)
    assert len(db.kv_list()) == n and db.kv_get("k00000") == value
    db.close()
    for i, bm in bookmarks:
        H.restore(path, bm)
        db = ObjectDatabase(path, history=HistoryOptions())
        assert len(db.kv_list()) == i + 1
        db.close()


def test_without_offload_checkpoints_inline(tmp_path):
    path = tmp_path / "o.sqlite"
    db = ObjectDatabase(path)
    for i in range(CHECKPOINT_PAGES + 10):
        db.kv_put(f"k{i:05d}", os.urandom(3000))
        db.commit()
    assert path.stat().st_size > CHECKPOINT_PAGES * 4096 // 2
    db.close()
