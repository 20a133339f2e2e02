"""``ObjectDatabase.close(offload=True)``: the fsyncs and the checkpoint of a close run on a worker
thread; the data, the history and the removal of an empty database's files are as with ``close()``,
and opening the file again waits for the close to finish."""

import threading
import time

from duro.storage import ObjectDatabase
from duro.storage import closing as D
from duro.storage import history as H
from duro.storage.journal import HistoryOptions, history_path


class Deferred:
    """Collects jobs; runs them when told, on another thread."""

    def __init__(self):
        self.jobs = []

    def __call__(self, job):
        self.jobs.append(job)

    def run_on_thread(self, delay=0.0):
        jobs, self.jobs = self.jobs, []

        def go():
            time.sleep(delay)
            for job in jobs:
                job()
        t = threading.Thread(target=go)
        t.start()
        return t


def test_close_runs_on_the_worker_and_keeps_data_and_history(tmp_path):
    path = tmp_path / "o.sqlite"
    off = Deferred()
    db = ObjectDatabase(path, offload=off, history=HistoryOptions())
    db.kv_put("a", 1)
    db.set_alarm(123)
    db.commit()
    bookmark = db.attached_history().current().bookmark
    db.close(offload=True)
    assert not db.is_open and len(off.jobs) == 1
    assert D._closing  # registered until the worker is done
    t = off.run_on_thread(delay=0.2)
    again = ObjectDatabase(path, history=HistoryOptions())
    # The close had not started on the worker: opening finished it here rather than wait.
    assert again.kv_get("a") == 1 and again.get_alarm() == 123
    assert not D._closing
    t.join()  # the worker finds nothing left to do
    assert again.attached_history().current().bookmark == bookmark  # no heal: the history held it
    again.close()
    # The checkpoint on close ran: the -wal is kept for the next open, empty; the -shm is gone.
    assert path.with_name("o.sqlite-wal").stat().st_size == 0
    assert not path.with_name("o.sqlite-shm").exists()


def test_an_empty_database_is_removed_by_the_worker(tmp_path):
    path = tmp_path / "o.sqlite"
    off = Deferred()
    db = ObjectDatabase(path, offload=off, history=HistoryOptions())
    db.kv_put("a", 1)
    db.commit()
    full = db.attached_history().current().bookmark
    db.kv_delete("a")
    db.commit()
    db.close(offload=True)
    off.run_on_thread().join()
    assert not path.exists() and not path.with_name("o.sqlite-wal").exists()
    assert history_path(path).exists()
    H.restore(path, full)  # the history still has every state, ending in the empty one
    db = ObjectDatabase(path, history=HistoryOptions())
    assert db.kv_get("a") == 1
    db.close()


def test_a_reopen_waits_for_a_close_already_running(tmp_path, monkeypatch):
    path = tmp_path / "o.sqlite"
    off = Deferred()
    db = ObjectDatabase(path, offload=off, history=HistoryOptions())
    db.kv_put("a", 1)
    db.commit()
    entered, release = threading.Event(), threading.Event()
    real = D._finish_close

    def slow(*args):
        entered.set()
        release.wait(5)
        real(*args)
    monkeypatch.setattr(D, "_finish_close", slow)
    db.close(offload=True)
    t = off.run_on_thread()
    assert entered.wait(5)
    threading.Timer(0.2, release.set).start()
    started = time.monotonic()
    assert ObjectDatabase(path, history=HistoryOptions()).kv_get("a") == 1
    assert time.monotonic() - started >= 0.1  # waited for the worker's close
    t.join()


def test_the_same_instance_reopens_after_its_offloaded_close(tmp_path):
    path = tmp_path / "o.sqlite"
    off = Deferred()
    db = ObjectDatabase(path, offload=off, history=HistoryOptions())
    for i in range(3):
        db.kv_put("n", i)
        db.commit()
        db.close(offload=True)
        off.run_on_thread(delay=0.05)
        assert db.kv_get("n") == i  # reopens once the close is done
    db.close()


def test_a_close_says_whether_every_wal_frame_reached_the_database_file(tmp_path):
    """SQLite's checkpoint on close fails silently; with the node journal a close that did not move
    every frame must not tell the journal the file holds the object's records (they would be
    dropped while only the WAL, which recovery removes, holds them). Real SQLite files: a reader
    on another connection keeps the checkpoint from finishing."""
    import apsw

    from duro.storage.closing import close_quietly

    path = tmp_path / "o.sqlite"
    wal = tmp_path / "o.sqlite-wal"
    shm = tmp_path / "o.sqlite-shm"

    def writer():
        conn = apsw.Connection(str(path))
        conn.execute("PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t(a); INSERT INTO t VALUES (1)").fetchall()
        return conn

    conn = writer()
    reader = apsw.Connection(str(path))
    reader.execute("BEGIN; SELECT count(*) FROM t").fetchall()  # holds a snapshot of the WAL
    conn.execute("INSERT INTO t VALUES (2)")  # a frame the reader's snapshot does not let go
    assert close_quietly(conn, shm) is False
    assert wal.stat().st_size > 0  # kept: the frames are still there
    reader.execute("COMMIT")
    reader.close()

    conn = writer()
    assert close_quietly(conn, shm) is True
    assert not wal.exists() or wal.stat().st_size == 0
    check = apsw.Connection(str(path))
    assert check.execute("SELECT count(*) FROM t").fetchall() == [(3,)]
    check.close()
