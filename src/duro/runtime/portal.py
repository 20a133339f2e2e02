"""Portals: a handler runs inside a greenlet, so that synchronous code deep inside it can wait for
an awaitable on the event loop (``pyodide.ffi.run_sync``, which Pyodide implements by stack
switching with JSPI).

``run(coro)`` is an awaitable that drives ``coro`` step by step in a child greenlet (the *portal*);
each value the coroutine yields to the event loop is handed back to the greenlet driving the task,
which yields it on, and what the loop sends (or throws) comes back the same way. ``wait(aw)``,
called anywhere below a portal, drives ``aw`` in the *current* greenlet and sends its yields out
through the portal's exit: the task is suspended with the whole synchronous stack kept, exactly
as an ``await`` would suspend it. Everything stays in the task that ran the handler (its context
variables, its activation, its input and output gates); nothing runs in another thread, and the
event loop never runs inside a portal.

Portals cost two greenlet switches per event and two per suspension (greenlets are pooled,
since making one costs several switches), so they are off until ``enable()``: the project loader
calls it when the project's source names ``run_sync``, and so does the first lookup of
``pyodide.ffi.run_sync``. A project that never names it pays nothing. Inspired by the
``greenback`` library's portals.
"""

from __future__ import annotations

import inspect
import threading
import types
from typing import Any, Awaitable, Callable, Generator, TypeVar

import greenlet

__all__ = ["NoPortalError", "active", "enable", "enabled", "run", "call", "wait"]

T = TypeVar("T")

_enabled = False


class NoPortalError(RuntimeError):
    """``run_sync`` was called where no portal is open: outside any handler duro runs (module top
    level, a thread), or in a task the handler started itself. Nothing was awaited."""


def enable() -> None:
    """Run handlers in portals from now on (for the life of the process)."""
    global _enabled
    _enabled = True


def enabled() -> bool:
    return _enabled


class _Portal(greenlet.greenlet):  # type: ignore[misc]
    """A greenlet that runs portal jobs (coroutines) one after another; while it runs one, its
    ``parent`` (the greenlet driving the task's step) is the way out to the event loop. Idle ones
    are kept, per thread: making a greenlet costs several times a switch. ``outcome`` holds how
    the last job finished, ``(value, error)``, until the shim takes it."""

    outcome: tuple[Any, BaseException | None] | None = None


_FINISHED = object()  # what a portal switches to its parent when its job is over
_MAX_IDLE = 64
_local = threading.local()


def _serve(coro: Any) -> None:
    """Body of a portal greenlet: run each coroutine it is given to the end, handing its yields to
    the parent, then leave how it finished in ``outcome`` and wait for the next one. Nothing of a
    finished job stays referenced from here while the portal is idle."""
    me = greenlet.getcurrent()
    while True:
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                yielded = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as stop:
                me.outcome = (stop.value, None)
                break
            except BaseException as e:
                me.outcome = (None, e)
                break
            value, error = me.parent.switch((yielded, me))
            del yielded
        del coro, value, error
        coro = me.parent.switch(_FINISHED)


@types.coroutine
def _shim(coro: Any) -> Generator[Any, Any, Any]:
    here = greenlet.getcurrent()
    idle = getattr(_local, "idle", None)
    if idle is None:
        idle = _local.idle = []
    if idle:
        child = idle.pop()
        child.parent = here
    else:
        child = _Portal(_serve, parent=here)
    # A greenlet has a contextvars context of its own: the portal shares the task's.
    child.gr_context = here.gr_context
    request = child.switch(coro)
    while request is not _FINISHED:
        yielded, resume = request
        try:
            sent = ((yield yielded), None)
        except BaseException as e:  # cancellation, GeneratorExit: forwarded into the coroutine
            sent = (None, e)
        request = resume.switch(sent)
        del yielded, resume, sent
    value, error = child.outcome  # type: ignore[misc]
    child.outcome = None
    child.gr_context = None  # an idle portal keeps no task's context variables alive
    if len(idle) < _MAX_IDLE:
        idle.append(child)
    if error is not None:
        try:
            raise error
        finally:
            del error
    return value


async def _in_portal(coro: Any) -> Any:
    # A native coroutine around the generator-based shim: tasks accept only coroutines.
    return await _shim(coro)


def run(aw: Awaitable[T]) -> Awaitable[T]:
    """``aw`` run in a portal when it is a coroutine (anything else has no user code to suspend)."""
    if inspect.iscoroutine(aw):
        return _in_portal(aw)
    return aw


async def _call_sync(fn: Callable[[], T]) -> T:
    return fn()


def call(fn: Callable[[], T]) -> Awaitable[T]:
    """``fn()`` (synchronous) run in a portal: it may ``wait`` for awaitables."""
    return _in_portal(_call_sync(fn))  # type: ignore[no-any-return]


def _portal_of(g: Any) -> Any:
    while g is not None and not isinstance(g, _Portal):
        g = g.parent
    return g


def active() -> bool:
    """True when ``wait`` would work here: the current code runs below a portal."""
    return _portal_of(greenlet.getcurrent()) is not None


def wait(aw: Awaitable[T], what: str = "run_sync()") -> T:
    """Wait for ``aw`` from synchronous code running below a portal, and return its result (or
    raise its exception). Raises :class:`NoPortalError` where there is none."""
    me = greenlet.getcurrent()
    portal = _portal_of(me)
    if portal is None or portal.dead:
        if inspect.iscoroutine(aw):
            aw.close()  # never awaited: no "coroutine was never awaited" warning on top
        raise NoPortalError(
            f"{what} can only wait inside a handler duro runs (fetch, an RPC method, alarm, a WebSocket "
            f"handler, the constructor, a blockConcurrencyWhile or waitUntil callback, an entrypoint's fetch "
            f"or scheduled), not at module level, in a thread, or in a task the code started itself; "
            f"there, use 'await'. See docs/cloudflare.md#pyodideffirun_sync")
    it = aw if inspect.iscoroutine(aw) else aw.__await__()
    exit_ = portal.parent
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            yielded = it.send(value) if error is None else it.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        value, error = exit_.switch((yielded, me))
