"""What an activation needs from the runtime that hosts it (the port ``catalog.Runtime`` fills)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

from ..storage.durability import Barrier
from ..storage.journal import HistoryOptions

if TYPE_CHECKING:
    from .activation import Activation
    from .alarms import AlarmScheduler
    from .nodejournal import NodeJournal

__all__ = ["ActivationHost"]


class _Limits(Protocol):
    @property
    def max_queued_events(self) -> int: ...
    @property
    def max_queued_bytes(self) -> int: ...
    @property
    def max_queue_age(self) -> float: ...
    @property
    def cpu_ms(self) -> int: ...
    @property
    def io_keepalive(self) -> float: ...


class ActivationHost(Protocol):
    """What an activation needs from the runtime that hosts it (``catalog.Runtime`` is one): its
    limits, the durability barrier its commits go to, the alarm scheduler (a restored alarm is set
    again through it), the history settings and the maintenance thread its database uses, and a
    way to drop it from the catalog once it is reset."""

    @property
    def limits(self) -> _Limits: ...
    @property
    def barrier(self) -> Barrier: ...
    @property
    def journal(self) -> "NodeJournal | None": ...
    @property
    def alarms(self) -> "AlarmScheduler": ...
    @property
    def history(self) -> HistoryOptions | None: ...
    def offload(self, job: Callable[[], None]) -> None: ...
    def forget(self, act: "Activation") -> None: ...
