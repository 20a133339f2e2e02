"""``pyodide.ffi`` for code written for Cloudflare Python Workers, on CPython.

- Conversions (``to_js``, ``create_proxy``, ``create_once_callable``, ``destroy_proxies``) are
  identities: duro's values are already Python values (``to_js(bytes)`` adds ``.buffer``).
- ``run_sync(awaitable)`` waits for an awaitable from synchronous code inside a handler, as
  Pyodide's stack switching does: the handler runs in a greenlet portal (``runtime/portal.py``),
  switched on by the first lookup of ``run_sync``. ``can_run_sync()`` says whether it would work.
- ``JsException`` is the base of the errors duro raises where Cloudflare's runtime throws a JS
  error, with the JS ``name`` and ``message``.
- ``JsProxy`` and its subclasses exist for ``isinstance`` checks (always False for duro values).

Any other name fails with an error naming it and pointing at ``docs/cloudflare.md``.
"""

from __future__ import annotations

from typing import Any, Awaitable, TypeVar

from ..errors import JsException
from ..runtime import portal
from ._missing import missing

__all__ = ["IN_BROWSER", "JsArray", "JsAsyncGenerator", "JsAsyncIterable", "JsAsyncIterator", "JsBuffer",
           "JsCallable", "JsDoubleProxy", "JsException", "JsFetchResponse", "JsGenerator", "JsIterable",
           "JsIterator", "JsMap", "JsMutableMap", "JsPromise", "JsProxy", "JsTypedArray", "can_run_sync",
           "create_once_callable", "create_proxy", "destroy_proxies", "jsnull", "run_sync", "to_js"]

T = TypeVar("T")

IN_BROWSER = False


class JsProxy:
    """Stands for a JavaScript object; duro never makes one, so ``isinstance(x, JsProxy)`` is
    False for every value duro hands out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("JsProxy cannot be created in duro: there are no JavaScript objects "
                        "(see docs/cloudflare.md#the-js-and-pyodideffi-modules)")


class JsArray(JsProxy): ...
class JsAsyncGenerator(JsProxy): ...
class JsAsyncIterable(JsProxy): ...
class JsAsyncIterator(JsProxy): ...
class JsBuffer(JsProxy): ...
class JsCallable(JsProxy): ...
class JsDoubleProxy(JsProxy): ...
class JsFetchResponse(JsProxy): ...
class JsGenerator(JsProxy): ...
class JsIterable(JsProxy): ...
class JsIterator(JsProxy): ...
class JsMap(JsProxy): ...
class JsMutableMap(JsProxy): ...
class JsPromise(JsProxy): ...
class JsTypedArray(JsProxy): ...


# JavaScript's null. Python Workers code compares results with it (``x is jsnull``); duro's values
# never contain one, since the SDK already maps null to None.
jsnull: Any = None


class _Uint8Array(bytes):
    """What ``to_js(some_bytes)`` gives: the bytes, with the ``Uint8Array`` members code reads
    before handing them on (``to_js(data).buffer`` as a response body, ``.length``,
    ``.byteLength``, ``.to_bytes()``)."""

    @property
    def buffer(self) -> bytes:
        return bytes(self)

    @property
    def length(self) -> int:
        return len(self)

    byteLength = length  # noqa: N815 - JS spelling

    def to_bytes(self) -> bytes:
        return bytes(self)

    def to_py(self) -> bytes:
        return bytes(self)


def to_js(value: Any, *args: Any, **kwargs: Any) -> Any:
    """The value itself (duro's values are Python values); bytes-like values get the few
    ``Uint8Array`` members Python Workers code uses."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _Uint8Array(value)
    return value


def create_proxy(value: Any, *args: Any, **kwargs: Any) -> Any:
    return value


def create_once_callable(value: Any, *args: Any, **kwargs: Any) -> Any:
    return value


def destroy_proxies(proxies: Any) -> None:
    """Nothing to destroy: duro hands out no proxies."""


def _run_sync(awaitable: Awaitable[T]) -> T:
    """Wait for ``awaitable`` from synchronous code running inside a handler and return its
    result (or raise its exception). The handler's task is suspended meanwhile, as with ``await``:
    other events may enter the object (unless the input gate is locked), and storage writes made
    before keep their output gate. Raises ``RuntimeError`` outside a handler."""
    return portal.wait(awaitable, "pyodide.ffi.run_sync()")


def _can_run_sync() -> bool:
    """True when ``run_sync`` would work here (inside a handler duro runs in a portal)."""
    return portal.active()


def __getattr__(name: str) -> Any:
    # run_sync is looked up here, not defined above, so that the first lookup (usually
    # ``from pyodide.ffi import run_sync`` when the project is imported) switches portals on.
    if name == "run_sync":
        portal.enable()
        return _run_sync
    if name == "can_run_sync":
        portal.enable()
        return _can_run_sync
    raise missing("pyodide.ffi", name)
