"""Whether any object may have written on behalf of one request: the front asks, so that a request
refused for overload after an earlier call of it wrote is not told that it changed nothing."""

from __future__ import annotations

import contextvars

__all__ = ["WriteNote", "note_writes"]


class WriteNote:
    """Whether any object may have written on behalf of one request (``note_writes``)."""

    __slots__ = ("wrote",)

    def __init__(self) -> None:
        self.wrote = False


_writes: contextvars.ContextVar["WriteNote | None"] = contextvars.ContextVar("duro_writes", default=None)


def note_writes() -> WriteNote:
    """From now on in this task (and the events it runs in objects, which run in it), note any
    storage write. The front uses it so that a request refused for overload after an earlier call
    of it wrote is not told it changed nothing."""
    note = WriteNote()
    _writes.set(note)
    return note


def _noted() -> None:
    note = _writes.get()
    if note is not None:
        note.wrote = True
