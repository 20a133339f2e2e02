"""The awaitables that calls running at call time hand back: storage methods and RPC on stubs.

A storage call does its work at once (synchronous SQLite on the loop) and returns a
:class:`Completed` (or :class:`Failed`): awaiting it gives the value or raises the error, any number
of times. An RPC call starts a task at once and returns a :class:`Pending` wrapping it. All three
pass ``asyncio.iscoroutine`` (they have ``send``/``throw``/``close``), so ``asyncio.create_task``,
``ensure_future`` and ``gather`` take them, as they take the coroutines Cloudflare's SDK returns.

An error nobody awaited is not lost: when a :class:`Failed` or :class:`Pending` is dropped without
having been awaited, its ``on_unawaited`` callback gets the error once (the activation logs it and
resets the object for storage; RPC logs it). This module never resets or logs by itself, and never
blocks.
"""

from __future__ import annotations

import asyncio
import collections.abc
from typing import Any, Callable, Generator

__all__ = ["Completed", "Failed", "Pending", "Unawaited"]

# Told (error, what) once for a failed call that was dropped without being awaited.
Unawaited = Callable[[BaseException, str], None]


class Completed:
    """A call that already returned ``value``."""

    __slots__ = ("_value",)

    def __init__(self, value: Any = None) -> None:
        self._value = value

    def __await__(self) -> Generator[Any, None, Any]:
        return self._value
        yield  # noqa: unreachable - makes this a generator

    # The coroutine protocol, for asyncio.create_task() / ensure_future().
    def send(self, _value: Any) -> Any:
        raise StopIteration(self._value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        raise typ if val is None else val

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<Completed {self._value!r}>"


class Failed:
    """A call that already failed with ``error``. Dropped without being awaited, it reports the
    error through ``on_unawaited`` (once)."""

    __slots__ = ("_error", "_what", "_on_unawaited")

    def __init__(self, error: BaseException, what: str, on_unawaited: Unawaited | None) -> None:
        self._error = error
        self._what = what
        self._on_unawaited = on_unawaited

    def __await__(self) -> Generator[Any, None, Any]:
        self._on_unawaited = None  # observed: the caller gets the error
        raise self._error
        yield  # noqa: unreachable - makes this a generator

    def send(self, _value: Any) -> Any:
        self._on_unawaited = None
        raise self._error

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        raise typ if val is None else val

    def close(self) -> None:
        pass

    def observed(self) -> bool:
        return self._on_unawaited is None

    def __del__(self) -> None:
        report = self._on_unawaited
        if report is not None:
            self._on_unawaited = None
            report(self._error, self._what)

    def __repr__(self) -> str:
        return f"<Failed {self._what}: {self._error!r}>"


class Pending:
    """A call still running as ``task``. Awaiting it waits for the task; dropped without being
    awaited, a failure of the task is reported through ``on_unawaited`` when it happens."""

    __slots__ = ("_task", "_what", "_on_unawaited", "_it")

    def __init__(self, task: "asyncio.Future[Any]", what: str, on_unawaited: Unawaited | None) -> None:
        self._task = task
        self._what = what
        self._on_unawaited = on_unawaited
        self._it: Any = None
        task.add_done_callback(_retrieve)  # reported here, not as "exception never retrieved"

    def __await__(self) -> Generator[Any, None, Any]:
        self._on_unawaited = None
        return self._task.__await__()

    def send(self, value: Any) -> Any:
        it = self._it
        if it is None:
            self._on_unawaited = None
            it = self._it = self._task.__await__()
        return it.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        it = self._it
        if it is None:
            raise typ if val is None else val
        return it.throw(typ if val is None else val)

    def close(self) -> None:
        pass

    def done(self) -> bool:
        return self._task.done()

    def __del__(self) -> None:
        report = self._on_unawaited
        if report is None:
            return
        self._on_unawaited = None
        task = self._task
        if task.done():
            _report_done(report, self._what, task)
        else:
            what = self._what
            task.add_done_callback(lambda t: _report_done(report, what, t))

    def __repr__(self) -> str:
        return f"<Pending {self._what} {self._task!r}>"


for _cls in (Completed, Failed, Pending):
    collections.abc.Coroutine.register(_cls)


def _retrieve(fut: "asyncio.Future[Any]") -> None:
    if not fut.cancelled():
        fut.exception()


def _report_done(report: Unawaited, what: str, task: "asyncio.Future[Any]") -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        report(exc, what)
