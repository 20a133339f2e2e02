"""The activation lifecycle as a transition table (h11 style): which state may follow which.

An activation is the one live instance of one object in this process. Every change of its state
goes through ``check_transition``; a transition not in the table is a bug in duro, never a user
error. Why an activation ends is a ``DeactivationReason`` (logged, never parsed).
"""

from __future__ import annotations

import enum

__all__ = ["ActivationState", "DeactivationReason", "check_transition"]


class ActivationState(enum.Enum):
    CREATED = "created"
    """No instance yet. Next: CONSTRUCTING, CLOSED (evicted unused), BROKEN."""
    CONSTRUCTING = "constructing"
    """The constructor is running. Next: ACTIVE, BROKEN (it raised or aborted)."""
    ACTIVE = "active"
    """Handling events. Next: CLOSED (eviction, hibernation, shutdown), BROKEN (reset)."""
    BROKEN = "broken"
    """Reset: instance and unconfirmed writes dropped, gates broken for good. Terminal."""
    CLOSED = "closed"
    """Evicted: gone from the catalog, database closing. Next: BROKEN (a commit made before the
    eviction failed to become durable)."""


class DeactivationReason(enum.Enum):
    """Why an activation was closed (the first three) or reset (the others)."""

    IDLE = "idle"
    HIBERNATION = "hibernation"
    SHUTDOWN = "shutdown"
    ABORT = "abort"
    COMMIT_FAILED = "commit failed"
    CRITICAL_SECTION_FAILED = "block_concurrency_while failed"
    CONSTRUCTOR_FAILED = "constructor failed"
    UNAWAITED_CALL_FAILED = "a storage call nobody awaited failed"
    CPU_LIMIT = "an event ran past its CPU limit"
    CODE_UPDATED = "code updated"


_S = ActivationState
_ALLOWED: dict[ActivationState, frozenset[ActivationState]] = {
    _S.CREATED: frozenset({_S.CONSTRUCTING, _S.CLOSED, _S.BROKEN}),
    _S.CONSTRUCTING: frozenset({_S.ACTIVE, _S.BROKEN}),
    _S.ACTIVE: frozenset({_S.CLOSED, _S.BROKEN}),
    _S.BROKEN: frozenset(),
    _S.CLOSED: frozenset({_S.BROKEN}),
}


def check_transition(old: ActivationState, new: ActivationState) -> None:
    """Raise ``RuntimeError`` unless ``new`` may follow ``old``."""
    if new not in _ALLOWED[old]:
        raise RuntimeError(f"illegal activation transition {old.name} -> {new.name}")
