"""Snapshot and restore ("fork", Cloudflare 2026-09-23): ``ctx.storage.snapshot(bookmark?)`` copies an
object's SQLite database; ``ctx.onNextSessionRestore(snapshot)`` makes another object start from it.

A :class:`DurableObjectSnapshot` is an opaque handle to a copy kept in ``DATA/snapshots/<token>.sqlite``
(without the source's alarm and name: identity and alarms are not copied). It crosses RPC as its
token, and nothing else: storing or cloning it raises Cloudflare's ``DataCloneError``. The restore
itself is the history's (``storage/history.py``, :func:`restore_file`): it happens when the
destination next opens its database, before its constructor runs, as a new point in its history.

Never: hand out a path from a token that is not 32 hex digits; copy a database with a transaction open.
"""

from __future__ import annotations

import os
import pathlib
import re
import secrets
import time
from typing import TYPE_CHECKING, Any, NoReturn

from .. import codec
from ..errors import InvalidInputError
from ..storage.database import strip_identity
from ..storage.history import SNAPSHOT_MARK, schedule_restore

if TYPE_CHECKING:
    from ..runtime import Activation

__all__ = ["DurableObjectSnapshot", "take_snapshot", "schedule_snapshot_restore", "SNAPSHOT_RETENTION_S"]

TEXT_NOT_CLONEABLE = ("DurableObjectSnapshots cannot be cloned or stored. They can only be transferred "
                      "over RPC.")
SNAPSHOT_RETENTION_S = 30 * 86400  # as point-in-time history: a snapshot older than this is gone
_TOKEN = re.compile(r"[0-9a-f]{32}")


class DurableObjectSnapshot:
    """An object's storage at one moment, to start another object from (``ctx.onNextSessionRestore``).
    Opaque: no methods; it can be returned from or passed to an RPC method, not stored."""

    __slots__ = ("_token",)

    def __init__(self, token: str) -> None:
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise InvalidInputError("not a DurableObjectSnapshot (a snapshot comes from ctx.storage.snapshot())")
        self._token = token

    def __copy__(self) -> NoReturn:
        raise codec.DataCloneError(TEXT_NOT_CLONEABLE)

    def __deepcopy__(self, memo: Any) -> NoReturn:
        raise codec.DataCloneError(TEXT_NOT_CLONEABLE)

    def __reduce__(self) -> NoReturn:
        raise codec.DataCloneError(TEXT_NOT_CLONEABLE)

    def __repr__(self) -> str:
        return "<DurableObjectSnapshot>"


codec.register(DurableObjectSnapshot, "DurableObjectSnapshot", lambda s: s._token, DurableObjectSnapshot,
               refusal=TEXT_NOT_CLONEABLE)


def snapshots_dir(act: "Activation") -> pathlib.Path:
    data_dir: pathlib.Path = getattr(act.runtime, "data_dir")  # the catalog's, beyond ActivationHost
    return data_dir / "snapshots"


def snapshot_file(act: "Activation", snap: DurableObjectSnapshot) -> pathlib.Path:
    return snapshots_dir(act) / f"{snap._token}.sqlite"


def take_snapshot(act: "Activation", bookmark: str | None) -> DurableObjectSnapshot:
    """Copy the object's database (committed by the caller) — or its state at ``bookmark`` — into a
    new snapshot file, and drop snapshot files past the retention."""
    folder = snapshots_dir(act)
    folder.mkdir(parents=True, exist_ok=True)
    _prune(folder)
    snap = DurableObjectSnapshot(secrets.token_hex(16))
    out = snapshot_file(act, snap)
    tmp = out.with_name(out.name + ".tmp")
    try:
        if bookmark is None:
            act.db.snapshot_into(tmp)
        else:
            _at_bookmark(act, bookmark, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return snap


def _at_bookmark(act: "Activation", bookmark: str, out: pathlib.Path) -> None:
    """The object's state at ``bookmark`` into ``out``, materialised from its history."""
    if act.db.materialize_at(bookmark, out) == 0:
        out.write_bytes(b"")
        return
    strip_identity(out)


def schedule_snapshot_restore(act: "Activation", snap: Any) -> None:
    """Make the object's next start replace its database with ``snap``'s copy."""
    if not isinstance(snap, DurableObjectSnapshot):
        raise TypeError(f"onNextSessionRestore() takes a DurableObjectSnapshot (from ctx.storage.snapshot()), "
                        f"not {type(snap).__name__}")
    path = snapshot_file(act, snap)
    if not path.is_file():
        raise InvalidInputError("This DurableObjectSnapshot has expired or does not exist on this node; take a "
                                "new one with ctx.storage.snapshot()")
    schedule_restore(act.db.path, SNAPSHOT_MARK + str(path))


def _prune(folder: pathlib.Path) -> None:
    cutoff = time.time() - SNAPSHOT_RETENTION_S
    for f in folder.glob("*.sqlite"):
        try:
            if f.stat().st_mtime < cutoff:
                f.unlink()
        except FileNotFoundError:
            continue
