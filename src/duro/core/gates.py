"""The bookkeeping of an object's two gates, as plain state (workerd's ``io-gate.h`` vocabulary).

``InputGate``: while locked (``block_concurrency_while``, ``transaction()``, the constructor's use of
them) new events wait. A critical section (``transaction()``) has an owner token; storage used by
anyone else meanwhile is *foreign use*, which the owner must know about before it rolls back. A
gate is broken by a reset and stays broken: the error is kept here, and only here.

``OutputGate``: the commit bookkeeping of the implicit transaction: whether a commit turn is
scheduled, how many critical sections hold commits back, and whether the open transaction gates
outputs (it does not while every write in it asked for ``allow_unconfirmed``).

This module holds state and decides; it never waits, schedules, touches a database or reads a
clock. The asyncio side (events, futures, tasks, the current task's token) is ``runtime/gates.py``.
"""

from __future__ import annotations

from ..errors import ObjectResetError, mark_remote
from .limits import MAX_BCW_DEPTH, TEXT_BCW_NESTED

__all__ = ["InputGate", "OutputGate", "SavedCriticalSection"]

# What entering a critical section replaced: the outer section's owner and its foreign-use flag.
SavedCriticalSection = tuple[object | None, bool]


class InputGate:
    """Lock depth, the critical section's owner, foreign storage use and the broken error.

    ``locks`` counts the locks held (``lock``/``unlock``, critical sections included); the gate
    is open at 0. ``owner`` is the token of the innermost running critical section (None outside
    one). ``broken`` is the error that reset the object; once set it never changes."""

    __slots__ = ("locks", "owner", "foreign_use", "broken")

    def __init__(self) -> None:
        self.locks = 0
        self.owner: object | None = None
        self.foreign_use = False
        self.broken: BaseException | None = None

    # ------------------------------------------------------------------ locks
    def lock(self) -> None:
        """Take one lock (new events wait). Refuses nesting deeper than ``MAX_BCW_DEPTH``."""
        if self.locks >= MAX_BCW_DEPTH:
            raise RuntimeError(TEXT_BCW_NESTED)
        self.locks += 1

    def unlock(self) -> bool:
        """Release one lock. Returns True when that opened the gate (no lock is left)."""
        self.locks -= 1
        if self.locks:
            return False
        self.foreign_use = False  # nothing of a critical section is left to be told about it
        return True

    # ------------------------------------------------------------------ critical sections
    def enter_critical_section(self, token: object) -> SavedCriticalSection:
        """Lock the gate for a critical section owned by ``token``. Returns what ``leave`` restores
        (sections nest: the inner one's foreign use is the outer one's too)."""
        self.lock()
        saved = (self.owner, self.foreign_use)
        self.owner = token
        self.foreign_use = False
        return saved

    def leave_critical_section(self, saved: SavedCriticalSection) -> bool:
        """End the innermost critical section. Returns True when that opened the gate."""
        self.owner, outer_foreign = saved
        self.foreign_use = self.foreign_use or outer_foreign
        return self.unlock()

    def is_foreign(self, token: object | None) -> bool:
        """Whether a critical section runs that ``token`` (the caller's) does not own."""
        owner = self.owner
        return owner is not None and token is not owner

    def note_use(self, token: object | None) -> None:
        """Storage is used by the holder of ``token``. Inside another's critical section, that
        work lands in the section's savepoint: remember it, so a failed section resets the object
        instead of silently undoing another event's acknowledged write."""
        owner = self.owner
        if owner is not None and token is not owner:
            self.foreign_use = True

    # ------------------------------------------------------------------ broken
    def break_with(self, error: BaseException) -> bool:
        """Break the gate for good. Returns False (and keeps the first error) if already broken."""
        if self.broken is not None:
            return False
        self.broken = error
        return True

    def reset_error(self) -> ObjectResetError:
        """The error a caller of the broken gate gets: a fresh ``ObjectResetError`` carrying the
        cause's message, marked as coming from the object (each caller gets its own instance).
        Retryable when its cause was (the object moved to another cluster node, say): the
        failed write was never acknowledged, and the retry reaches the object's new instance."""
        assert self.broken is not None
        err = ObjectResetError(str(self.broken))
        mark_remote(err, retryable=True if getattr(self.broken, "retryable", False) is True else None)
        return err


class OutputGate:
    """Commit scheduling of the implicit transaction, and whether it holds outputs back.

    ``holds`` counts critical sections (``transaction()``) that keep the open transaction from
    committing; ``commit_scheduled`` is True while an end-of-turn commit is queued; ``gated`` is
    False only while every write of the open transaction asked for ``allow_unconfirmed``."""

    __slots__ = ("holds", "commit_scheduled", "gated")

    def __init__(self) -> None:
        self.holds = 0
        self.commit_scheduled = False
        self.gated = False

    def transaction_opened(self) -> bool:
        """An implicit transaction began (it gates outputs). Returns True when the caller must
        schedule a commit turn: none is queued and no critical section holds commits."""
        self.gated = True
        if self.commit_scheduled or self.holds:
            return False
        self.commit_scheduled = True
        return True

    def commit_turn(self) -> bool:
        """The queued commit turn runs. Returns True when it may commit (nothing holds commits)."""
        self.commit_scheduled = False
        return not self.holds

    def hold(self) -> None:
        """A critical section begins: the open transaction must not commit until it ends."""
        self.holds += 1

    def release(self, transaction_open: bool) -> bool:
        """A critical section ended. Returns True when the caller must schedule a commit turn
        (the last hold is gone, a transaction is open, no turn is queued)."""
        self.holds -= 1
        if self.holds or not transaction_open or self.commit_scheduled:
            return False
        self.commit_scheduled = True
        return True
