"""The asyncio side of an object's input and output gates (state and rules: ``core/gates.py``).

``InputGate`` adds the event that wakes the events waiting for the gate to open, and the token of
the critical section the current task belongs to (a context variable: tasks a critical section
starts copy it, so they belong to it too). ``OutputGate`` adds the futures outputs wait for: the
open implicit transaction's commit and the durability of the last commit (``lock_while`` joins
another one, e.g. the alarm index's).

Neither ever blocks the loop; neither touches the database (the activation commits).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from typing import Any, AsyncIterator

from ..core import gates as core

__all__ = ["InputGate", "OutputGate"]

_critical_var: contextvars.ContextVar[object | None] = contextvars.ContextVar("duro_critical", default=None)


class InputGate(core.InputGate):
    """An object's input gate: ``wait()`` for it to open, ``critical_section()`` to lock it for
    the current task's ``transaction()``; ``lock``/``unlock`` (``block_concurrency_while``)."""

    __slots__ = ("_opened",)

    def __init__(self) -> None:
        super().__init__()
        self._opened = asyncio.Event()  # set while no lock is held, and for good once broken
        self._opened.set()

    def lock(self) -> None:
        super().lock()
        self._opened.clear()

    def unlock(self) -> bool:
        opened = super().unlock()
        if opened:
            self._opened.set()
        return opened

    def break_with(self, error: BaseException) -> bool:
        """Break the gate for good; the events waiting at it wake up and raise."""
        if not super().break_with(error):
            return False
        self._opened.set()
        return True

    async def wait(self) -> None:
        """Until no lock is held. Raises ``ObjectResetError`` if the gate breaks meanwhile."""
        while self.locks:
            await self._opened.wait()
            if self.broken is not None:
                raise self.reset_error()

    # ------------------------------------------------------------------ critical sections
    @contextlib.asynccontextmanager
    async def critical_section(self) -> AsyncIterator[None]:
        """Lock the gate for the body, owned by the current context: this task and any task it
        starts. An error in the body does not break the gate (the caller decides)."""
        token = object()
        saved = self.enter_critical_section(token)  # takes a lock: new events wait
        var_token = _critical_var.set(token)
        try:
            yield
        finally:
            _critical_var.reset(var_token)
            self.leave_critical_section(saved)

    def in_own_critical_section(self) -> bool:
        """Whether the current task runs inside the innermost critical section."""
        owner = self.owner
        return owner is not None and _critical_var.get() is owner

    def note_storage_use(self) -> None:
        """Storage is used from the current task (see ``core.InputGate.note_use``)."""
        if self.owner is not None:
            self.note_use(_critical_var.get())

    def must_wait_for_critical_section(self) -> bool:
        """True when ``wait_for_critical_section`` would wait: another event's critical section is
        running, and the gate is not broken."""
        return self.broken is None and self.is_foreign(_critical_var.get())

    async def wait_for_critical_section(self) -> None:
        """An event already in flight waits for another event's critical section to end before it
        uses the async storage API, as if the gate had held it back."""
        while self.is_foreign(_critical_var.get()):
            if self.broken is not None:
                return  # the event is failed by its next storage call (the gate stays open)
            await self._opened.wait()


class OutputGate(core.OutputGate):
    """An object's output gate: ``wait()`` until the writes made so far are durable.

    ``txn`` resolves when the open implicit transaction committed (None when none is open);
    ``durable`` when the last commit, and whatever ``lock_while`` joined, is durable. The object's
    input gate is consulted too: its broken error fails every output, and its critical section
    decides whether the open transaction holds the current task's outputs."""

    __slots__ = ("txn", "durable", "_input")

    def __init__(self, input_gate: InputGate) -> None:
        super().__init__()
        self.txn: asyncio.Future[None] | None = None
        self.durable: asyncio.Future[Any] | None = None
        self._input = input_gate

    async def wait(self) -> None:
        """Until every write made so far is committed and durable; raises what failed them. Inside
        a ``transaction()`` its own task cannot wait for the transaction's commit (that would never
        come): its outputs wait for everything committed before the transaction began."""
        fut = self.txn
        if fut is not None and self.gated and not (self.holds and self._input.in_own_critical_section()):
            await fut
        dur = self.durable
        if dur is not None:
            if not dur.done():
                await dur
            elif dur.exception() is not None:
                raise dur.exception()  # type: ignore[misc]
        if self._input.broken is not None:
            raise self._input.reset_error()

    def lock_while(self, fut: "asyncio.Future[Any]") -> None:
        """Outputs from now on also wait for ``fut``; if it fails, they fail."""
        prev = self.durable
        self.durable = fut if prev is None or prev.done() else asyncio.gather(prev, fut)

    def durable_future(self) -> "asyncio.Future[Any] | None":
        """Resolves when every commit so far is durable; None when none is still in flight."""
        dur = self.durable
        return dur if dur is not None and not dur.done() else None
