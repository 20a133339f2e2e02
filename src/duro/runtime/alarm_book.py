"""The alarm book: the node's alarm index (``DATA/alarms.sqlite``) and its in-memory mirror, the
:class:`~duro.core.alarms.AlarmTable`, kept consistent with every object's own alarm row.

It owns the index file, the table, the commit and reset hooks it registers on activations, the
batched index flushes and the durability of index commits. It tells the delivery side (the
scheduler in :mod:`duro.runtime.alarms`) only one thing, through ``wake(when_ms)``: something may
now be due at ``when_ms``. It never runs an alarm, never calls user code, and never deletes an
object's alarm row (the delivery side does, inside the successful attempt).

Why no alarm is lost. The object's row is the truth; the index only says when to look. Invariant:
for every object whose committed alarm row holds T, the index has that object's row with
``due_ms <= T`` (or a retry row for exactly T, ``scheduled_ms = T``).

1. *Setting* (``set_alarm``): the index row is made earlier (``lower``) and committed to the index
   file *first*; only then is T written into the object's open transaction, which commits at the
   end of the turn. Both files receive their commits in that order, so a process crash (SIGKILL) at
   any instant leaves either no T in the object or T and an index row. Against power loss, the
   commit hook hands the index WAL to the durability barrier and the object's output gate waits
   for it as well as for the object's own WAL: an *acknowledged* alarm is durable in both.
2. *Relaxing* (a later ``due_ms``, or removing the row) is done only once the object's write that
   justifies it is durable, and only if the object's alarm has not changed since (a node-wide
   change counter, ``gen``). A relaxation that is skipped or lost leaves the index too early: a
   phantom.
3. *Firing* reads the object's row, under its input gate. A phantom costs one look that finds
   nothing due and relaxes the index (by 2); the user's constructor does not run for it.
4. *Clearing*: the row is deleted inside the successful attempt's event, through the object's own
   implicit transaction, after the handler returned. A crash before that commit leaves the row and
   the index row, and the alarm fires again after restart: delivery is at least once.
5. *Start*: the index is loaded and whatever is due fires at once. The index file is created on
   the first ``set_alarm``; :meth:`AlarmBook.rebuild_index` rebuilds it from the objects.

Remaining window: a power loss in the middle of one barrier flush can persist an object's WAL but
not the index's; the alarm in it was never acknowledged, but ``get_alarm()`` will show it after
restart while the index misses it (``rebuild_index()`` repairs that).
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import weakref
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

from ..core.alarms import AlarmTable, RetryPolicy
from ..storage.alarm_index import AlarmIndex, IndexRow, scan_object_alarms

if TYPE_CHECKING:
    from .activation import Activation
    from .alarms import AlarmHost

__all__ = ["AlarmBook", "Key", "alarm_key", "FLUSH_DELAY"]

log = logging.getLogger("duro.alarms")

Key = tuple[str, str]
FLUSH_DELAY = 0.01  # seconds a relaxation may wait to share an index commit with others


def alarm_key(act: "Activation") -> Key:
    """The key of an object's alarm in the table and the index: (namespace key, hex id)."""
    return (act.unique_key, str(act.id))


class AlarmBook:
    """The index and its mirror for one runtime. ``wake(when_ms)`` is called when an alarm may be
    due earlier than the delivery side thinks (``None``: look now)."""

    def __init__(self, host: "AlarmHost", path: pathlib.Path, wake: Callable[[int | None], None], *,
                 policy: RetryPolicy | None = None) -> None:
        self.host = host
        self.path = path
        self.table = AlarmTable(policy)
        self._wake = wake
        self._index: AlarmIndex | None = None
        self._index_dir_synced = False
        self._index_seq = 0      # index commits so far
        self._synced_seq = 0     # index commits covered by the last barrier submission
        self._sync_fut: asyncio.Future[None] | None = None
        # Activations whose open transaction changed the alarm / set one (relying on an index row).
        # Weak: an evicted activation whose change was rolled back never commits again.
        self._dirty: "weakref.WeakSet[Activation]" = weakref.WeakSet()
        self._armed: "weakref.WeakSet[Activation]" = weakref.WeakSet()
        self._watched: "weakref.WeakSet[Activation]" = weakref.WeakSet()
        self._flush_handle: asyncio.Handle | asyncio.TimerHandle | None = None
        self._closed = False

    # ------------------------------------------------------------------ the storage API
    def set_alarm(self, act: "Activation", when_ms: int) -> None:
        """Write the alarm into the object's open transaction; times in the past become now."""
        when = max(int(when_ms), self.host.clock.now_ms())
        key = alarm_key(act)
        # The index first (argument 1 in the module docstring): if this fails, the object is untouched.
        self._ensure_index()
        if self.table.lower(key, act.id.name, when):
            self.flush()
            self._wake(when)
        act.db.set_alarm(when)
        self._armed.add(act)
        self.note_change(act, key)

    def delete_alarm(self, act: "Activation") -> None:
        act.db.delete_alarm()
        self.note_change(act, alarm_key(act))

    def note_delete_all(self, act: "Activation") -> None:
        """``delete_all()`` removed the alarm along with everything else."""
        self.note_change(act, alarm_key(act))

    def note_outside_alarm(self, unique_key: str, hex_id: str, name: str | None, when_ms: int) -> None:
        """An object's files were changed outside the runtime (restore, import, ``sql --write``) and
        now hold an alarm at ``when_ms``: make sure the index looks at the object by then."""
        self._ensure_index()
        if self.table.lower((unique_key, hex_id), name, int(when_ms)):
            self.flush()
            self._wake(int(when_ms))

    def note_change(self, act: "Activation", key: Key) -> None:
        """The object's open transaction changed its alarm row: relax the index once it commits."""
        self.table.changed(key)
        self._dirty.add(act)
        if act not in self._watched:
            self._watched.add(act)
            act.on_commit.append(self._on_commit)
            act.on_reset.append(self._on_reset)

    # ------------------------------------------------------------------ commit hooks
    def _on_commit(self, act: "Activation") -> None:
        if act not in self._dirty:
            return
        self._dirty.discard(act)
        key = alarm_key(act)
        gen = self.table.gen(key)
        value = act.db.get_alarm()  # just committed: no transaction is open
        if act in self._armed:
            # The index row this alarm relies on must be durable before the commit is acknowledged.
            self._armed.discard(act)
            fut = self._index_durable()
            if fut is not None:
                act.hold_outputs_for(fut)
        dur = act.durable_future()
        if dur is None:
            self._settle(key, gen, value)
        else:
            dur.add_done_callback(partial(self._settle_if_durable, key, gen, value))

    def _on_reset(self, act: "Activation", error: BaseException) -> None:
        # Its uncommitted alarm changes are gone; any index row they lowered is a harmless phantom.
        self._dirty.discard(act)
        self._armed.discard(act)

    def _settle_if_durable(self, key: Key, gen: int, value: int | None, fut: "asyncio.Future[Any]") -> None:
        if not fut.cancelled() and fut.exception() is None:
            self._settle(key, gen, value)

    def _settle(self, key: Key, gen: int, value: int | None) -> None:
        if self._closed:
            return  # a relaxation may be skipped (argument 2)
        self.table.settle(key, gen, value)
        self.schedule_flush()
        if value is not None:
            self._wake(value)

    # ------------------------------------------------------------------ the index file
    def _ensure_index(self) -> AlarmIndex:
        if self._index is None:
            self._index = AlarmIndex(self.path)
            owns = self.host.owns
            for row in self._index.load():
                if not owns(row.object_id):
                    continue  # another worker's object: that worker fires it
                self.table.load((row.namespace, row.object_id), row.name, row.due_ms, row.scheduled_ms, row.retries)
        return self._index

    def flush(self) -> None:
        """Write every changed record to the index, in one transaction (committed, not fsynced)."""
        changes = self.table.drain()
        if not changes:
            return
        index = self._ensure_index()
        ups = [IndexRow(k[0], k[1], r.name, r.due_ms, r.scheduled_ms, r.retries) for k, r in changes if r is not None]
        dels = [k for k, r in changes if r is None]
        index.apply(ups, dels)
        self._index_seq += 1

    def schedule_flush(self) -> None:
        """Write the batched changes (relaxations, retry counts) a little later: one index commit
        per ``FLUSH_DELAY`` rather than one per settled alarm. A ``lower`` never waits for this."""
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_DELAY, self._flush_soon)

    @property
    def flush_pending(self) -> bool:
        """A batched flush is scheduled and has not run yet."""
        return self._flush_handle is not None

    def _flush_soon(self) -> None:
        self._flush_handle = None
        if self._closed and self._index is None:
            return
        try:
            self.flush()
        except Exception:
            # Only relaxations are batched here; losing them leaves phantoms, never lost alarms.
            log.exception("writing the alarm index failed")

    def _index_durable(self) -> "asyncio.Future[None] | None":
        """A future that resolves when every index commit so far is durable (None: nothing to wait)."""
        if self._index is None:
            return None
        if self._index_seq != self._synced_seq:
            self._synced_seq = self._index_seq
            self._sync_fut = self.host.make_durable(str(self._index.wal_path), sync_dir=not self._index_dir_synced)
            self._index_dir_synced = True
        fut = self._sync_fut
        return fut if fut is not None and not fut.done() else None

    def rebuild_index(self) -> int:
        """Recreate the index from every object's own alarm row (opens every database: slow). For a
        data directory whose ``alarms.sqlite`` was lost. Returns how many alarms were found."""
        rows = [r for r in scan_object_alarms(self.host.objects_dir) if self.host.owns(r.object_id)]
        index = self._ensure_index()
        index.apply(rows, [])
        self._index_seq += 1
        for row in rows:
            if self.table.lower((row.namespace, row.object_id), row.name, row.due_ms):
                self._wake(row.due_ms)
        self.flush()
        return len(rows)

    @property
    def commits(self) -> int:
        """Commits made to the index file since it was opened."""
        return self._index.commits if self._index is not None else 0

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        """Start keeping the book: load the index file if there is one (else it is created by the
        first ``set_alarm``)."""
        self._closed = False
        if self._index is None and self.path.exists():
            self._ensure_index()

    def close(self) -> None:
        """Write what is batched and close the index file. Relaxations that arrive later are
        skipped (argument 2: they leave phantoms, never lost alarms)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        try:
            self.flush()
        except Exception:
            log.exception("writing the alarm index failed")
        self._closed = True
        if self._index is not None:
            self._index.close()
            self._index = None
