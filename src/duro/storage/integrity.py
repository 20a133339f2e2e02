"""Is a database file physically sound, and which point of an object's history is.

Owns ``PRAGMA integrity_check`` over one file (read-only, never creating a -wal or -shm) and the
search for the latest intact state in a history file. It never changes an object's files: a
restore (``history.restore``) uses it to refuse a damaged state instead of reporting success.
"""

from __future__ import annotations

import os
import pathlib
import urllib.parse

import apsw

from duro.storage.historyfile import HistoryFile
from duro.storage.historyread import materialize_index

__all__ = ["check_file", "run_check", "latest_intact_index", "MAX_REPORTED"]

MAX_REPORTED = 10  # integrity_check stops after this many problems: enough to say what is wrong


def check_file(path: str | os.PathLike[str], *, max_errors: int = MAX_REPORTED) -> list[str]:
    """The problems ``PRAGMA integrity_check`` finds in the database at ``path`` (empty: sound).

    The file is opened read-only and immutable, so it must not be open for writing elsewhere (an
    object being served is checked through a consistent copy, see ``maintenance``). A file SQLite
    cannot even open as a database is one problem, named."""
    p = pathlib.Path(path).absolute()
    if p.stat().st_size == 0:
        return []  # the empty state
    uri = "file:" + urllib.parse.quote(str(p)) + "?immutable=1"
    try:
        conn = apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    except apsw.Error as e:
        return [f"cannot open as a SQLite database: {e}"]
    try:
        return run_check(conn, max_errors)
    finally:
        conn.close()


def run_check(conn: apsw.Connection, max_errors: int = MAX_REPORTED) -> list[str]:
    """``PRAGMA integrity_check`` on an open connection: the problems found (empty: sound)."""
    try:
        rows = conn.execute(f"PRAGMA integrity_check({int(max_errors)})").fetchall()
    except apsw.Error as e:  # a damaged page 1 or schema: SQLite gives up before checking
        return [f"{type(e).__name__}: {e}"]
    problems = [str(r[0]) for r in rows]
    return [] if problems == ["ok"] else problems


def _intact(hf: HistoryFile, i: int, scratch: pathlib.Path) -> bool:
    try:
        materialize_index(hf, i, scratch)
        return not check_file(scratch, max_errors=1)
    except Exception:  # a record that cannot be read is not a state to go back to
        return False
    finally:
        scratch.unlink(missing_ok=True)


def latest_intact_index(hf: HistoryFile, damaged: int, scratch: pathlib.Path) -> int | None:
    """The latest record before ``damaged`` whose state passes the check, or None.

    Damage usually persists from the record that took it in until a restore, so this steps back
    1, 2, 4, ... records until a state is intact, then bisects between it and the damaged one:
    O(log n) states materialised, not n. ``scratch`` is a file name it may use and removes."""
    bad, step = damaged, 1
    good = None
    while True:
        i = max(damaged - step, 0)
        if i >= bad:
            break
        if _intact(hf, i, scratch):
            good = i
            break
        bad = i
        if i == 0:
            break
        step *= 2
    if good is None:
        return None
    while bad - good > 1:
        mid = (good + bad) // 2
        if _intact(hf, mid, scratch):
            good = mid
        else:
            bad = mid
    return good
