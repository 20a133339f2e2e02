"""What a failed power-cut round leaves to read: the journal as the cut left it, object by object.

The test copies ``DATA/journal`` aside after each cut (the next server's recovery deletes it). When
a check fails, :func:`describe` says, for every object the journal has records of, how many records
it holds, the counter its records redo to, and the counter in the object's file after recovery: a
write acknowledged but missing from the journal and one in the journal but not redone look different.
"""

from __future__ import annotations

import pathlib
import sqlite3
import tempfile
from collections.abc import Iterable

from duro.ids import NamespaceKey
from duro.storage.journalfile import COMMIT, SYNCED, pending_redo, redo, scan_segments, segment_paths

_NAMESPACE = "powercut-ledger-Ledger"  # tests/powercut/project's class Ledger
_KEY = NamespaceKey(_NAMESPACE)


def _counter(db: pathlib.Path) -> object:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT v FROM n").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as e:
        return f"<{e}>"
    return rows[0][0] if rows else 0


def describe(journal: pathlib.Path, data: pathlib.Path, names: Iterable[str] = ()) -> str:
    """One line per object with journal records: records, SYNCED through, what they redo to, and
    what the recovered file holds (objects of the power-cut project's class named by ``names``
    are shown by name)."""
    ids = {f"do/{_NAMESPACE}/{_KEY.id_from_name(n)}.sqlite": n for n in names}
    if not journal.is_dir():
        return f"no journal at {journal}"
    scan = scan_segments(segment_paths(journal))
    todo, corrupt = pending_redo(scan)
    synced: dict[str, int] = {}
    counts: dict[str, int] = {}
    for r in scan.records:
        if r.kind == SYNCED:
            synced[r.key] = max(synced.get(r.key, 0), r.through)
        elif r.kind == COMMIT:
            counts[r.key] = counts.get(r.key, 0) + 1
    lines = [f"journal {journal}: {len(scan.records)} records, last lsn {scan.last_lsn}, torn at {scan.torn_at}, "
             f"damage {scan.damage}, corrupt {corrupt}"]
    with tempfile.TemporaryDirectory() as tmp:
        for key in sorted(counts):
            recs = [r for r in scan.records if r.kind == COMMIT and r.key == key]
            redo(pathlib.Path(tmp), key, recs, history=False)  # every record, as if nothing was synced
            lines.append(f"{ids.get(key, key)}: {counts[key]} records (lsn {recs[0].lsn}..{recs[-1].lsn}, seq "
                         f"{recs[-1].capture().seq}), synced through {synced.get(key, 0)}, to redo "
                         f"{len(todo.get(key, []))}; records give {_counter(pathlib.Path(tmp) / key)}, "
                         f"file has {_counter(data / key)}")
    return "\n".join(lines)
