"""The power-cut filesystem itself: what is synced survives a cut, what is not is lost. These are
the rules the durability tests rely on, so each is checked on its own."""

from __future__ import annotations

import os

import apsw
import pytest


pytestmark = pytest.mark.powercut

def _fsync(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path, data: bytes, *, sync: bool) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fdatasync(fd)
    finally:
        os.close(fd)


def test_unsynced_data_is_lost_synced_data_survives(powercut):
    m = powercut.mount
    _write(m / "f", b"kept", sync=True)
    _fsync(m)
    fd = os.open(m / "f", os.O_RDWR)
    os.pwrite(fd, b"KEPT-and-more", 0)  # overwrite and extend, never synced
    os.close(fd)
    assert (m / "f").read_bytes() == b"KEPT-and-more"  # reads see the unsynced write
    assert powercut.cut() > 0
    assert (powercut.backing / "f").read_bytes() == b"kept"


def test_a_new_name_needs_its_directory_synced(powercut):
    m = powercut.mount
    (m / "sub").mkdir()
    _fsync(m)
    _write(m / "synced-file-only", b"x", sync=True)
    _write(m / "sub" / "both", b"y", sync=True)
    _fsync(m / "sub")
    powercut.cut()
    assert not (powercut.backing / "synced-file-only").exists()
    assert (powercut.backing / "sub" / "both").read_bytes() == b"y"


def test_unlink_and_rename_are_undone_until_the_directory_is_synced(powercut):
    m = powercut.mount
    for name in ("gone", "old", "target"):
        _write(m / name, name.encode(), sync=True)
    _fsync(m)
    os.unlink(m / "gone")
    os.rename(m / "old", m / "target")  # replaces target
    assert sorted(os.listdir(m)) == ["target"]
    powercut.cut()
    b = powercut.backing
    assert sorted(os.listdir(b)) == ["gone", "old", "target"]
    assert (b / "target").read_bytes() == b"target" and (b / "old").read_bytes() == b"old"


def test_synced_rename_and_unlink_stay(powercut):
    m = powercut.mount
    _write(m / "a", b"a", sync=True)
    _write(m / "b", b"b", sync=True)
    _fsync(m)
    os.rename(m / "a", m / "c")
    os.unlink(m / "b")
    _fsync(m)
    powercut.cut()
    assert sorted(os.listdir(powercut.backing)) == ["c"]


@pytest.mark.parametrize("synchronous, survives", [("FULL", True), ("OFF", False)])
def test_sqlite_wal_commit_survives_only_when_synced(powercut, synchronous, survives):
    db = powercut.mount / "t.sqlite"
    conn = apsw.Connection(str(db))
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.execute(f"PRAGMA synchronous={synchronous}").fetchall()
    conn.execute("CREATE TABLE t (v)")
    _fsync(powercut.mount)  # the database and -wal names themselves
    conn.execute("INSERT INTO t VALUES (42)")
    assert conn.execute("SELECT v FROM t").fetchall() == [(42,)]
    powercut.cut()
    after = apsw.Connection(str(powercut.backing / "t.sqlite"))
    try:
        rows = after.execute("SELECT v FROM t").fetchall()
    except apsw.SQLError:
        rows = None  # the table itself was never synced
    assert (rows == [(42,)]) is survives
