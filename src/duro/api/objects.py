"""The classes users write against: ``DurableObject``, ``WorkerEntrypoint``, and ``ctx``.

``DurableObject.__init__(self, ctx, env)`` sets ``self.ctx`` and ``self.env`` (they are also set
before a subclass's ``__init__`` runs, so code that never calls ``super().__init__`` still works).
``ctx`` is a :class:`DurableObjectState`: ``id``, ``storage``, ``block_concurrency_while``,
``wait_until``, ``abort`` and the WebSocket methods. Snake_case is the documented spelling; every
Cloudflare camelCase name is an alias.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar, cast

from ..errors import DurableObjectAbort, ObjectResetError
from ..core.lifecycle import DeactivationReason
from ..runtime import portal
from ..runtime.tasks import log_failure
from .snapshots import DurableObjectSnapshot
from .storage import DurableObjectStorage
from .websocket import WebSocketStateMixin

if TYPE_CHECKING:
    from ..runtime import Activation
    from .facets import FacetSet

__all__ = ["DurableObject", "DurableObjectState", "WorkerEntrypoint", "ExecutionContext"]

T = TypeVar("T")


class DurableObject:
    """Base class of every Durable Object. Public methods are callable over RPC."""

    ctx: "DurableObjectState"
    env: Any

    def __init__(self, ctx: "DurableObjectState", env: Any) -> None:
        self.ctx = ctx
        self.env = env


class DurableObjectState(WebSocketStateMixin):
    """``ctx`` of a Durable Object: the object's identity, storage and concurrency controls."""

    def __init__(self, activation: "Activation") -> None:
        self._act = activation
        self.id = activation.id
        self.storage = DurableObjectStorage(activation)
        self._facets: "FacetSet | None" = None
        self._module: str | None = None  # the module of the object's class, and env: for ctx.exports
        self._env: Any = None

    @property
    def exports(self) -> "Exports":
        """``ctx.exports``: the classes of this object's module by name (for ``ctx.facets``)."""
        return Exports(self._module, self._env)

    @property
    def facets(self) -> "FacetSet":
        """Child objects with their own SQLite inside this one (``api/facets.py``)."""
        if self._facets is None:
            from .facets import FacetSet
            self._facets = FacetSet(self._act)
        return self._facets

    def block_concurrency_while(self, callback: Callable[[], Awaitable[T]]) -> "asyncio.Future[T]":
        """Run ``callback`` with no other event delivered until it finishes; return its result
        when awaited. Usable unawaited in ``__init__`` and as a decorator. If it raises (or runs
        longer than 30 s) the object is reset.

        The critical section is shielded from whoever awaits it: a caller that gives up (a
        timeout, a cancelled request) stops waiting, but the callback runs to its end and the
        object is not reset, as on Cloudflare."""
        task = self._act.block_concurrency_while(callback)
        outer = asyncio.shield(task)
        if outer is not task:
            outer.add_done_callback(_retrieve)
        return outer

    blockConcurrencyWhile = block_concurrency_while  # noqa: N815

    def on_next_session_restore(self, snapshot: DurableObjectSnapshot) -> Awaitable[str]:
        """Replace this object's storage with ``snapshot`` (from another object's
        ``ctx.storage.snapshot()``) when it next starts; follow with ``ctx.abort(reason)`` to make
        that now. Returns a bookmark of the state just before (undo with
        ``ctx.storage.onNextSessionRestoreBookmark``). Needs point-in-time history."""
        return self.storage._next_session_restore(snapshot)

    onNextSessionRestore = on_next_session_restore  # noqa: N815

    def wait_until(self, awaitable: Awaitable[Any]) -> None:
        """Keep the object alive until ``awaitable`` finishes."""
        self._act.spawn(_await(awaitable))

    waitUntil = wait_until  # noqa: N815

    def abort(self, reason: str | None = None, options: Any = None, **kwargs: Any) -> None:
        """Reset the object now: drop the instance and its unconfirmed writes. Never returns."""
        err = DurableObjectAbort(reason)
        retry = kwargs.get("retry_alarm", kwargs.get("retryAlarm"))
        if options is not None and isinstance(options, dict):
            retry = options.get("retryAlarm", options.get("retry_alarm", retry))
        if retry is False:
            self._act.suppress_alarm_retry = True  # type: ignore[attr-defined]
        self._act.reset(ObjectResetError(err.reason), DeactivationReason.ABORT)
        raise err


def construct(cls: type, activation: "Activation", env: Any, visible_id: Any = None) -> Any:
    """Build an instance of ``cls`` for ``activation``: ``ctx`` (with ``ctx.id`` = ``visible_id``,
    by default the activation's) and ``env`` are set before the class's ``__init__`` runs, so code
    that never calls ``super().__init__`` still has them."""
    ctx = DurableObjectState(activation)
    if visible_id is not None:
        ctx.id = visible_id
    ctx._module, ctx._env = cls.__module__, env  # for ctx.exports
    activation.ctx = ctx  # type: ignore[attr-defined]
    instance = cast(Any, cls).__new__(cls)
    instance.ctx = ctx
    instance.env = env
    instance.__init__(ctx, env)
    return instance


class Exports:
    """``ctx.exports``: ``ctx.exports.Name`` is the namespace bound to the Durable Object class
    ``Name`` if there is one, else the class itself — either can be the ``class`` of a facet. Other
    names (a ``WorkerEntrypoint``'s loopback binding, say) raise ``AttributeError`` saying so."""

    def __init__(self, module: str | None, env: Any) -> None:
        self._module = module
        self._env = env

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        mod = sys.modules.get(self._module or "")
        cls = getattr(mod, name, None)
        if not isinstance(cls, type) or issubclass(cls, WorkerEntrypoint):
            raise AttributeError(f"ctx.exports.{name}: duro's ctx.exports gives the Durable Object classes of "
                                 f"the object's module (for ctx.facets); {self._module} has no such class")
        for value in vars(self._env).values() if self._env is not None else ():
            if getattr(value, "class_name", None) == name and hasattr(value, "get_by_name"):
                return value
        return cls


def _retrieve(fut: "asyncio.Future[Any]") -> None:
    """An unawaited critical section (from a constructor) reports its failure by resetting the
    object; its error needs no second report as "never retrieved"."""
    if not fut.cancelled():
        fut.exception()


async def _await(aw: Awaitable[Any]) -> Any:
    return await aw


class ExecutionContext:
    """``ctx`` of a ``WorkerEntrypoint``: ``wait_until`` and ``pass_through_on_exception``."""

    def __init__(self, tasks: set["asyncio.Task[Any]"]) -> None:
        self._tasks = tasks

    def wait_until(self, awaitable: Awaitable[Any]) -> None:
        coro = _await(awaitable)
        task = asyncio.ensure_future(portal.run(coro) if portal.enabled() else coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(log_failure)

    waitUntil = wait_until  # noqa: N815

    def pass_through_on_exception(self) -> None:
        """Accepted for compatibility; duro has no origin to pass through to."""

    passThroughOnException = pass_through_on_exception  # noqa: N815


class WorkerEntrypoint:
    """The stateless front of a project: ``fetch(request)`` runs for every HTTP request."""

    ctx: ExecutionContext
    env: Any

    def __init__(self, ctx: ExecutionContext, env: Any) -> None:
        self.ctx = ctx
        self.env = env
