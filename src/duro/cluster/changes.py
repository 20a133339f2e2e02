"""Changes made to an object's files outside its connection, in cluster mode: ``duro objects
restore``, ``branch``, ``import`` and ``sql --write`` through a node's admin listener.

The object's replicated log is its truth: a change made only to the owner's file would be lost
at the next take-over (rebuilt from the log), and later commits would land on pages the log does
not know. So the node that makes the change first owns the object (it claims one nobody owns;
one another live node owns is the caller's to forward there), makes the change while no
instance has the file open, then appends it to the log as the object's next commit — every page
of the history record the change wrote (a restore: the pages it changed; an import or a write:
the whole file, as the history's snapshot of it), numbered as that record, so that bookmarks
stay the same on every node. The change is done once the log acknowledged it; if the append
fails, the object is dropped here and its next owner rebuilds it without the change.

Never: answer a change as done before the log acknowledged it.
"""

from __future__ import annotations

import asyncio
import pathlib

from ..clock import now_ms
from ..errors import StorageError
from ..storage.historyfile import PAGE_SIZE, HistoryFile
from ..storage.journalfile import Capture, record_capture
from ..storage.paths import history_path
from .leases import object_key
from .node import ClusterNode

__all__ = ["log_outside_change", "change_capture"]


def change_capture(path: pathlib.Path) -> Capture:
    """The object's state after an outside change as one commit: its history's last record (the
    change's), or, for an object that keeps no history, its whole file (numbered 0, as its
    commits are)."""
    hf = HistoryFile.open(history_path(path))
    if hf is not None:
        try:
            last = hf.last
            if last is not None:
                return record_capture(hf, last)
        finally:
            hf.close()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    pages = {i // PAGE_SIZE + 1: data[i:i + PAGE_SIZE] for i in range(0, len(data), PAGE_SIZE)}
    return Capture(0, now_ms(), 0, len(data) // PAGE_SIZE, pages, bytes(16))


async def log_outside_change(node: ClusterNode, namespace: str, hex_id: str) -> None:
    """Append the change just made to the owned object's files to its log and wait for the
    acknowledgement (module doc). StorageError (the object dropped here) if it could not be."""
    key = object_key(hex_id)
    own = node.owned.get(key)
    if own is None:
        raise StorageError(f"object {hex_id} moved to another node while it was being changed; the change was "
                           "not made (its new owner rebuilt it without it): retry")
    path = node.runtime.db_path(namespace, hex_id)
    capture = await asyncio.to_thread(change_capture, path)
    try:
        await own.link.append(capture)
    except Exception as e:
        await node.drop(key, e)
        raise StorageError(f"object {hex_id}: the change was not made: the object's replicated log did not take "
                           f"it ({e}); the object is as it was before: retry") from e
