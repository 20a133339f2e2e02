"""Carrying out a restore scheduled for an object's next start (``onNextSessionRestoreBookmark()``,
``onNextSessionRestore()``): just before its constructor runs.

The restore itself is the history's (``storage/history.py``: the state at the bookmark, or the
snapshot's copy, becomes a new point in history). In cluster mode the object's replicated log is
its truth, so the restore is also appended there as the object's next commit (every page it
changed, numbered as its history record is): the next owner rebuilds the object with it, and the
object's outputs wait for the log's acknowledgement like those of any commit.

Never: let the object's constructor run before the restore, or an output leave before the log holds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..storage.history import SNAPSHOT_MARK
from ..storage.journal import marker_path
from ..storage.journalfile import record_capture

if TYPE_CHECKING:
    from .activation import Activation

__all__ = ["apply_pending_restore"]


def apply_pending_restore(act: "Activation") -> None:
    """Carry out the restore scheduled for ``act``'s object, if any. The restored alarm is set
    again through the scheduler, so its index knows it."""
    db = act.db
    marker = marker_path(db.path)
    if db.history is None or not marker.exists():
        return
    from_snapshot = marker.read_text().startswith(SNAPSHOT_MARK)
    history = db.attached_history()  # opening the database carries out the restore
    if db.port.restored is not None and getattr(act.runtime.journal, "logs_restores", False):
        _log_restore(act, history)
    when = db.get_alarm()
    if when is not None:
        act.runtime.alarms.set_alarm(act, when)
    elif from_snapshot:  # a snapshot brings no alarm, and the object's own is dropped with its data
        act.runtime.alarms.delete_alarm(act)


def _log_restore(act: "Activation", history: Any) -> None:
    """Append the restore just carried out to the object's log (module doc). Should the append
    fail, the object is dropped and taken again from its log, without the restore."""
    capture = record_capture(history.file, history.current())
    link = act.link
    assert link is not None
    dur = link.append(capture)
    act.out_gate.durable = dur
    dur.add_done_callback(act._on_durable)
