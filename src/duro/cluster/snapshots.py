"""Snapshots of owned objects on a cadence, in cluster mode.

A take-over rebuilds an object from its latest snapshot plus every message after it; the journal
stream keeps messages for 31 days. So an object must be snapshot well within that window while it
changes, or its next owner could find the first message after the snapshot expired (and refuse
it: a broken chain). Snapshots also bound how much a take-over replays. A graceful hand-over
snapshots every object it can; besides, every minute a node snapshots each object it owns that
wrote ``DURO_CLUSTER_SNAPSHOT_MESSAGES`` messages (1,000) since its last snapshot, or wrote any
and was last snapshot ``DURO_CLUSTER_SNAPSHOT_AGE`` seconds ago (one day).

A snapshot holds the database and its history (point-in-time recovery on the next owner), both
as of one acknowledged position of the log: for a live object they are copied on the event loop
between two events (SQLite's online backup of its own connection; no commit can come in
between), for a closed one read from its files on a worker thread and kept only if no commit and
no activation came meanwhile. An object whose appends are not settled is left for the next round.

Never: store a snapshot that holds a commit the log has not acknowledged, or one whose history
is not the database's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING

from ..storage.paths import history_path

if TYPE_CHECKING:
    from .node import ClusterNode, Owned

__all__ = ["snapshot_forever", "snapshot_due", "take_snapshot"]

log = logging.getLogger("duro.cluster")


def _env(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def snapshot_due(own: "Owned", now: float) -> bool:
    olog = own.olog
    changed = olog.messages_since_snapshot
    return changed >= _env("DURO_CLUSTER_SNAPSHOT_MESSAGES", 1000) or \
        (changed > 0 and now - olog.snapshot_at >= _env("DURO_CLUSTER_SNAPSHOT_AGE", 86400))


async def snapshot_forever(node: "ClusterNode") -> None:
    every = _env("DURO_CLUSTER_SNAPSHOT_EVERY", 60)
    while every > 0:
        await asyncio.sleep(every)
        reg = node.registry
        if node.closing or reg is None or not reg.writable():
            continue
        now = time.monotonic()
        for key, own in list(node.owned.items()):
            if node.closing:
                break
            if node.owned.get(key) is not own or not snapshot_due(own, now):
                continue
            try:
                await take_snapshot(node, own)
            except Exception as e:  # noqa: BLE001 - a snapshot only shortens the next rebuild: next round
                log.warning("object %s: no snapshot this round (%s)", own.hex_id, e)


def _copy_live(act: object, path: os.PathLike[str]) -> tuple[bytes, bytes | None] | None:
    """The live object's database and history as of now (on the event loop), or None if it is in
    the middle of a transaction or has no database."""
    db = act.db  # type: ignore[attr-defined]
    if db.in_transaction or act.out_gate.txn is not None:  # type: ignore[attr-defined]
        return None
    tmp = f"{os.fspath(path)}.snap-tmp"
    try:
        if not db.port.backup_into(tmp):
            return None
        with open(tmp, "rb") as f:
            data = f.read()
    finally:
        for side in ("", "-wal", "-shm", "-journal"):
            try:
                os.unlink(tmp + side)
            except FileNotFoundError:
                pass
    try:
        history = history_path(path).read_bytes()
    except FileNotFoundError:
        history = None
    return data, history


async def take_snapshot(node: "ClusterNode", own: "Owned") -> bool:
    """Snapshot one owned object now if it can be (module doc); whether it was."""
    from .node import _closed_files, _wal_empty
    olog = own.olog
    if olog._broken is not None or olog._queue or olog._flight is not None:
        return False
    runtime = node.runtime
    path = runtime.db_path(own.namespace, own.hex_id)
    seq, head, appended, messages = olog._acked, olog._head, own.link._appended, olog.messages
    act = runtime.find(own.namespace, own.hex_id)
    live = act is not None and act.db.is_open
    if live:
        got = _copy_live(act, path)
        if got is None:
            return False
        data, history = got
    else:
        if not path.exists() or not _wal_empty(path):
            return False
        data, history = await asyncio.to_thread(_closed_files, path)
        act = runtime.find(own.namespace, own.hex_id)
        if (act is not None and act.db.is_open) or own.link._appended != appended or olog._acked != seq:
            return False  # it woke up or wrote meanwhile: what was read may be torn
    if node.owned.get(olog.key) is not own:
        return False
    assert node.journal is not None
    await node.journal.put_snapshot(olog.key, seq, head, data, history)
    olog.snapshot_taken(messages)
    log.info("node %s: snapshot of object %s at %d (%d bytes, %s)", node.node, own.hex_id, seq,
             len(data) + len(history or b""), "copied from its connection" if live else "its files")
    return True
