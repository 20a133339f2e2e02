"""The durability seam, written down: what the runtime needs from a durability barrier and what an
object's database needs from its commit history. Interfaces only; no implementation lives here.

Two sides of one promise, "a caller never sees state that could still be lost" (DESIGN.md §3):

- :class:`Barrier` makes a commit *durable*: the runtime submits the file a commit wrote and holds
  the object's outputs until the returned future resolves. Today's implementation is
  :class:`duro.runtime.barrier.DurabilityBarrier` (fdatasync, group commit across objects); a
  node-level journal (one fdatasync per batch for every object's commits) and a JetStream journal
  (a replicated append) are further implementations of the same interface.
- :class:`History` keeps an object's commits *readable* as records (bookmarks, point-in-time
  recovery). Today's implementation is :class:`duro.storage.journal.ObjectHistory` (a ``.history``
  file next to the database).

Every implementation must pass the suite in ``tests/conformance/``: a new one is added there as one
more fixture parameter. This module must never import an implementation, do I/O, or use asyncio
at run time (futures appear in annotations only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, runtime_checkable

if TYPE_CHECKING:
    import asyncio

    from duro.storage.historyfile import Record
    from duro.storage.journalfile import Capture
    from duro.storage.journal import HistoryOptions

__all__ = ["Barrier", "BarrierStatistics", "ClosingHistory", "History", "JournalLink", "Run"]


class BarrierStatistics(TypedDict):
    """A barrier's counters (trio's ``statistics()``): ``commits`` submitted, ``flushes`` run (one
    flush makes a whole batch durable), ``synced_files`` over all flushes, ``pending_files``
    waiting for the next flush."""

    mode: str
    commits: int
    flushes: int
    synced_files: int
    pending_files: int


@runtime_checkable
class Barrier(Protocol):
    """Makes the commits written to files durable, grouping the commits of many objects.

    Used from the event loop's thread only. The life of a barrier: ``start()`` (or the first
    ``submit()``), any number of ``submit()``, then ``close()`` once.
    """

    @property
    def mode(self) -> str:
        """What "durable" means: ``"fsync"`` (on stable storage: survives a power loss) or ``"os"``
        (handed to the OS: survives a crash of duro, not a power loss; nothing to wait for)."""
        ...

    def start(self) -> None:
        """Get ready to flush, on the running loop. Idempotent; ``submit()`` starts a barrier that
        was not started."""
        ...

    def submit(self, path: str, *, sync_dir: bool = False) -> asyncio.Future[None] | None:
        """Ask for everything written to ``path`` before this call to be made durable.

        Returns ``None`` when there is nothing to wait for (``mode == "os"``: SQLite handed the
        commit to the OS when it returned; a test barrier that holds every commit returns a future
        even then). Otherwise a future of the running loop that:

        - **resolves** (result ``None``) only once every byte written to ``path`` before the call
          is on stable storage (fdatasync'd), and with ``sync_dir`` also ``path``'s directory
          entry (its directory fsync'd: a file created since the last sync survives a power loss).
          A file that no longer exists counts as durable: SQLite removes a ``-wal`` file only
          after checkpointing it into the database file, and that checkpoint synced it.
        - **keeps order**: it resolves only once every earlier ``submit()`` for the same path is
          durable too, and the futures of one path settle in submit order. Across paths there is
          no order.
        - **may share a flush** (group commit): one flush may cover many submits, of one path or
          of many; a submit made while a flush is running is never resolved by that flush (it may
          have missed the bytes), it rides the next one.
        - **fails** with a :class:`~duro.errors.StorageError` (never a bare ``OSError``) whose
          message names the file and the reason, with the original error as ``__cause__``, when
          the data could not be made durable. The caller resets the object: its writes since the
          last durable commit count as lost. A failure fails only the futures of that path;
          the barrier keeps serving every other file, and later submits for the same path too.
        - is never cancelled by the barrier; a caller may drop it.

        Calling ``submit()`` after ``close()`` is a bug of the caller: a barrier that would return
        a future raises ``RuntimeError``. Every call counts in ``statistics()["commits"]``.
        """
        ...

    async def close(self) -> None:
        """Stop accepting work and finish the work already submitted: when it returns, every future
        it handed out has resolved or failed (none is left pending) and its threads are gone.
        Idempotent."""
        ...

    def statistics(self) -> BarrierStatistics:
        """The counters of this barrier (see :class:`BarrierStatistics`)."""
        ...


Run = Callable[..., list[tuple[Any, ...]]]
"""Runs one of duro's own SQL statements on the object's connection and returns its rows."""


@runtime_checkable
class ClosingHistory(Protocol):
    """An object's history handed to the thread that finishes its database's close
    (:meth:`History.detach`): ``sync()`` before SQLite's closing checkpoint, ``discarded()`` if the
    empty database's files were removed, then ``close()``. Used from that one thread only."""

    def sync(self) -> None:
        """Make every record appended so far durable (as :meth:`History.sync`)."""
        ...

    def discarded(self) -> None:
        """The database's files were removed because it held nothing: record the empty state (as
        :meth:`History.after_discard`, without closing)."""
        ...

    def close(self) -> None:
        """Sync, then release the history's files. Idempotent."""
        ...


@runtime_checkable
class History(Protocol):
    """The commit history of one object's database: every write commit becomes a record, named
    by a bookmark, from which the database can be rebuilt as of that commit (point-in-time
    recovery). Driven by the database (:class:`~duro.storage.ObjectDatabase`) on its own thread,
    synchronously, in this order for each connection::

        attach → (prepare_commit → COMMIT → after_commit(got) | sync | sync_later)* → close | detach | after_discard

    The promises a user relies on:

    - **Readable at once.** After ``after_commit()`` the commit's record is ``current()`` and its
      bookmark resolves, in this instance and, once durable, after a reopen.
    - **Durable before the database file holds it.** A record is durable once ``sync()``,
      ``close()`` or the function from ``sync_later()`` has returned. The database calls one of
      them before every checkpoint, so a page reaches the database file only after its record is
      durable. Nothing here syncs on the commit path.
    - **Always the database's state.** After ``attach()``, ``current()`` names the state the
      database holds, even if the history missed commits (a crash between a commit and its
      append), was torn (a power loss cut its tail: a torn record was never durable, and is
      ignored) or the database was changed from outside: then the state as found is recorded as a
      new record.
    - **Bookmarks sort in commit order.** Each record's bookmark is greater, as a string, than
      every earlier record's, also for commits in the same millisecond.

    Failures to read or write the history raise :class:`~duro.errors.StorageError`, never a bare
    ``OSError``. Bad input (a malformed or unknown bookmark, a time outside the retention window)
    raises :class:`~duro.errors.InvalidInputError` and changes nothing.
    """

    options: HistoryOptions
    """Retention window and clock of this history."""

    restore_checked: bool
    """Set by the database once it has applied a pending restore for this instance (a restore
    scheduled later waits for the next instance)."""

    def attach(self, run: Run, checkpoint: Callable[..., None], existed: bool) -> None:
        """The database's connection just opened (``existed``: its file was already there). Bring
        the history in step with it (above); ``run`` runs duro's own SQL on the connection,
        ``checkpoint()`` checkpoints its WAL."""
        ...

    def prepare_commit(self) -> None:
        """Called inside a write transaction, just before COMMIT: number the commit."""
        ...

    def after_commit(self, got: tuple[int, dict[int, bytes], bytes] | None) -> Record | None:
        """Called just after a COMMIT that wrote, with what it appended to the WAL (db size in
        pages, ``{pgno: page}``, commit frame identity; None when it changed no page): append the
        commit's record and return it (None when nothing changed). The commit itself has happened:
        a StorageError here means only that its record could not be written."""
        ...

    def sync(self) -> None:
        """Make every record appended so far durable. Cheap when nothing was appended since."""
        ...

    def sync_later(self) -> Callable[[], None]:
        """For a checkpoint on another thread: a function that, called on that thread, makes
        durable every record appended before ``sync_later()`` was called."""
        ...

    def detach(self) -> ClosingHistory:
        """Hand the open history to the thread that finishes the database's close. This history
        is left closed, ready to ``attach()`` again."""
        ...

    def after_discard(self) -> None:
        """The database's files were removed because it held nothing: record the empty state,
        sync and close. Its bookmarks stay resolvable."""
        ...

    def close(self) -> None:
        """Sync, then release the history's files (before the connection closes). Idempotent."""
        ...

    def current(self) -> Record:
        """The newest record: the database's state as of its last commit (an object that never
        committed: the empty state at seq 0)."""
        ...

    def resolve(self, bookmark: str) -> Record:
        """The record ``bookmark`` names. InvalidInputError if it is malformed, names no record of
        this history, or names one pruned away (the message says where the history starts)."""
        ...

    def for_time(self, when_ms: int) -> Record:
        """The newest record committed at or before ``when_ms`` (epoch ms). InvalidInputError if
        ``when_ms`` is in the future, outside the retention window, or before the history starts
        (except for an object that did not exist yet: its empty state at seq 0)."""
        ...


@runtime_checkable
class JournalLink(Protocol):
    """One object's handle on its node's commit journal (DESIGN.md §3), when the journal is the
    durability source: the object's database is then written with no fsync of its own, and this
    is how its connection keeps the one rule that makes that safe — **a page reaches the database
    file only once the journal record that wrote it is durable**, and the journal forgets an
    object's records only once its file holds them durably.

    Today's implementation is the node journal's ``_Link`` (:mod:`duro.runtime.nodejournal`). The
    blocking methods may be called from any thread.
    """

    def append(self, capture: Capture) -> asyncio.Future[None]:
        """Append one write commit (event loop). The future resolves once the record is durable,
        or fails with StorageError: the object must then reset (its connection is closed without
        a checkpoint and :meth:`recover` redoes it)."""
        ...

    def position(self) -> int:
        """The journal position of this object's last record (0: none yet)."""
        ...

    def wait_durable(self, lsn: int) -> bool:
        """Block until the record at ``lsn`` was written; True if it is durable, False if it could
        not be (then the WAL holds a commit the journal does not: never checkpoint it)."""
        ...

    def written(self, through: int) -> None:
        """The object's database file (and history, and its name in its folder) now hold every
        record up to ``through``, written but not synced (a checkpoint or a close): the journal
        syncs them later, many objects at once, and only then drops those records."""
        ...

    def synced(self, through: int, *, durable: bool = False) -> None:
        """The object's database file (and history) now hold every record up to ``through`` on
        stable storage: those records may be dropped. With ``durable`` (before a file is changed
        outside the journal, as a restore does), every file written so far is synced first and
        this returns only once the journal has the marker on disk."""
        ...

    def recover(self) -> None:
        """Drop the object's WAL and redo its file from the journal (after a failed append)."""
        ...

    def check_open(self) -> None:
        """Raise CorruptDatabaseError if the object cannot be opened (damaged journal records);
        recover first if a failed append left it behind."""
        ...
