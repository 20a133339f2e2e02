"""The activation lifecycle as a transition table (h11 style): which state may follow which.

An activation is the one live instance of one object in this process.
"""

from __future__ import annotations

import enum

__all__ = ["ActivationState", "DeactivationReason", "check_transition"]


class ActivationState(enum.Enum):
    CREATED = "created"
    """No instance yet. Next: CONSTRUCTING, CLOSED."""
    CONSTRUCTING = "constructing"
    """The constructor is running. Next: ACTIVE, BROKEN."""
    ACTIVE = "active"
    """Handling events. Next: CLOSED (eviction), HIBERNATED, BROKEN."""
    HIBERNATED = "hibernated"
    """Instance dropped, hibernatable sockets kept. Next: CONSTRUCTING, CLOSED."""
    BROKEN = "broken"
    """Reset: instance and unconfirmed writes dropped; sticky. Next: CLOSED."""
    CLOSED = "closed"
    """Gone from the catalog. Terminal."""


class DeactivationReason(enum.Enum):
    IDLE = "idle"
    HIBERNATION = "hibernation"
    ABORT = "abort"
    COMMIT_FAILED = "commit failed"
    CRITICAL_SECTION_FAILED = "block_concurrency_while failed"
    CONSTRUCTOR_FAILED = "constructor failed"
    CODE_UPDATED = "code updated"
    SHUTDOWN = "shutdown"
    DELETED = "deleted"


_S = ActivationState
_ALLOWED: dict[ActivationState, frozenset[ActivationState]] = {
    _S.CREATED: frozenset({_S.CONSTRUCTING, _S.CLOSED, _S.BROKEN}),
    _S.CONSTRUCTING: frozenset({_S.ACTIVE, _S.BROKEN}),
    _S.ACTIVE: frozenset({_S.CLOSED, _S.HIBERNATED, _S.BROKEN}),
    _S.HIBERNATED: frozenset({_S.CONSTRUCTING, _S.CLOSED, _S.BROKEN}),
    _S.BROKEN: frozenset({_S.CLOSED}),
    _S.CLOSED: frozenset(),
}


def check_transition(old: ActivationState, new: ActivationState) -> None:
    if new not in _ALLOWED[old]:
        raise RuntimeError(f"illegal activation transition {old.name} -> {new.name}")
