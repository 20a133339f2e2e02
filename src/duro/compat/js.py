"""The ``js`` module for Cloudflare Python Workers code, on CPython: the JavaScript globals such code
uses that make sense without JavaScript (the audit is in ``docs/cloudflare.md``).

JavaScript constructors are spelled ``X.new(...)`` from Python (``Response.new("hi")``,
``URL.new(request.url)``), as Cloudflare's Python Workers examples write them. Values are Python
values: ``Object.fromEntries`` gives a dict, ``Array.from`` a list, ``Date.new`` a datetime. Any
other name fails with an error naming it and pointing at the docs (``_missing.py``); names that
need a JavaScript engine or a Cloudflare-only service say why.
"""

from __future__ import annotations

import asyncio
import base64
import json as _json
import logging
import math as _math
import os
import random as _random
import time
import uuid
from typing import Any, Callable
from urllib.parse import parse_qsl, quote, unquote, urlencode, urljoin, urlsplit

from ..api import Request as _Request
from ..api import Response
from ..api.fetch import Headers
from ..errors import JsException
from ._missing import missing

__all__ = ["Array", "Date", "Error", "Headers", "JSON", "Math", "Object", "Promise", "Request", "Response",
           "TextDecoder", "TextEncoder", "URL", "URLSearchParams", "Uint8Array", "WebSocket", "WebSocketPair",
           "WebSocketRequestResponsePair", "atob", "btoa", "clearTimeout", "console", "crypto",
           "decodeURIComponent", "encodeURIComponent", "fetch", "globalThis", "performance", "setTimeout",
           "undefined"]


class URLSearchParams:
    """The query of a :class:`URL`: ``get``, ``getAll``, ``has``, ``set``, ``append``, ``delete``."""

    def __init__(self, query: str = "") -> None:
        self._items = parse_qsl(query.lstrip("?"), keep_blank_values=True)

    @classmethod
    def new(cls, query: str = "") -> "URLSearchParams":
        return cls(query)

    def get(self, name: str) -> str | None:
        return next((v for k, v in self._items if k == name), None)

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self._items if k == name]

    getAll = get_all  # noqa: N815

    def has(self, name: str) -> bool:
        return any(k == name for k, _ in self._items)

    def set(self, name: str, value: Any) -> None:
        self.delete(name)
        self._items.append((name, str(value)))

    def append(self, name: str, value: Any) -> None:
        self._items.append((name, str(value)))

    def delete(self, name: str) -> None:
        self._items = [(k, v) for k, v in self._items if k != name]

    def to_string(self) -> str:
        return urlencode(self._items)

    toString = to_string  # noqa: N815

    def __str__(self) -> str:
        return self.to_string()


class URL:
    """A read-only parse of an absolute URL with the WHATWG property names."""

    def __init__(self, url: str, base: str | None = None) -> None:
        href = urljoin(str(base), str(url)) if base is not None else str(url)
        parts = urlsplit(href)
        if not parts.scheme or not parts.netloc:
            raise TypeError(f"Invalid URL string: {url!r}")
        self.href = href
        self.protocol = parts.scheme + ":"
        self.host = parts.netloc.rsplit("@", 1)[-1]
        self.hostname = parts.hostname or ""
        self.port = str(parts.port) if parts.port is not None else ""
        self.pathname = parts.path or "/"
        self.search = "?" + parts.query if parts.query else ""
        self.hash = "#" + parts.fragment if parts.fragment else ""
        self.origin = f"{parts.scheme}://{self.host}"
        self.searchParams = URLSearchParams(parts.query)  # noqa: N815
        self.search_params = self.searchParams

    @classmethod
    def new(cls, url: str, base: str | None = None) -> "URL":
        return cls(url, base)

    def to_string(self) -> str:
        return self.href

    toString = to_string  # noqa: N815

    def __str__(self) -> str:
        return self.href

_log = logging.getLogger("duro.console")


class Date:
    @staticmethod
    def now() -> int:
        return time.time_ns() // 1_000_000

    @staticmethod
    def new(ms: float | None = None) -> Any:
        import datetime
        t = Date.now() if ms is None else ms
        return datetime.datetime.fromtimestamp(t / 1000, tz=datetime.timezone.utc)


class JSON:
    @staticmethod
    def stringify(value: Any) -> str:
        return _json.dumps(value)

    @staticmethod
    def parse(text: str) -> Any:
        return _json.loads(text)


class Object:
    """``Object.fromEntries`` / ``entries`` / ``keys`` / ``values`` / ``assign`` over dicts (and
    ``Object.values(pair)`` unpacks a ``WebSocketPair``); ``Object.new()`` is an empty dict."""

    @staticmethod
    def new(init: Any = None) -> dict[Any, Any]:
        return dict(init or {})

    @staticmethod
    def fromEntries(entries: Any) -> dict[Any, Any]:  # noqa: N802 - JS spelling
        return {k: v for k, v in (entries.items() if isinstance(entries, dict) else entries)}

    @staticmethod
    def entries(obj: Any) -> list[list[Any]]:
        return [[k, v] for k, v in _mapping(obj).items()]

    @staticmethod
    def values(obj: Any) -> list[Any]:
        if hasattr(obj, "object_values"):
            return list(obj.object_values())
        if isinstance(obj, dict):
            return list(obj.values())
        return list(obj)

    @staticmethod
    def keys(obj: Any) -> list[Any]:
        return list(obj.keys()) if isinstance(obj, dict) else []

    @staticmethod
    def assign(target: dict[Any, Any], *sources: Any) -> dict[Any, Any]:
        for src in sources:
            target.update(_mapping(src))
        return target


def _mapping(obj: Any) -> dict[Any, Any]:
    if isinstance(obj, dict):
        return obj
    if obj is None:
        raise TypeError("Cannot convert undefined or null to object")
    return {k: v for k, v in vars(obj).items() if not k.startswith("_")}


class Array:
    """``Array.from(iterable, map_fn=None)`` (spelled ``Array.from_`` or ``getattr(Array, "from")``
    in Python), ``Array.of``, ``Array.isArray``, ``Array.new``: lists."""

    @staticmethod
    def from_(items: Any, map_fn: Callable[..., Any] | None = None) -> list[Any]:
        out = list(items.values() if isinstance(items, dict) else items)
        return [map_fn(x, i) for i, x in enumerate(out)] if map_fn is not None else out

    @staticmethod
    def of(*items: Any) -> list[Any]:
        return list(items)

    @staticmethod
    def isArray(value: Any) -> bool:  # noqa: N802 - JS spelling
        return isinstance(value, (list, tuple))

    @staticmethod
    def new(*items: Any) -> list[Any]:
        if len(items) == 1 and isinstance(items[0], int):
            return [None] * items[0]
        return list(items)


setattr(Array, "from", Array.from_)


class Math:
    """``Math`` over Python's ``math`` and ``random``."""

    PI = _math.pi
    E = _math.e
    floor = staticmethod(lambda x: _math.floor(x))
    ceil = staticmethod(lambda x: _math.ceil(x))
    trunc = staticmethod(lambda x: _math.trunc(x))
    abs = staticmethod(abs)
    sqrt = staticmethod(_math.sqrt)
    pow = staticmethod(lambda x, y: x ** y)
    log = staticmethod(_math.log)
    exp = staticmethod(_math.exp)
    sign = staticmethod(lambda x: (x > 0) - (x < 0))

    @staticmethod
    def random() -> float:
        return _random.random()

    @staticmethod
    def round(x: float) -> int:
        return _math.floor(x + 0.5)  # JavaScript rounds halves up, Python to even

    @staticmethod
    def max(*xs: float) -> float:
        return max(xs) if xs else -_math.inf

    @staticmethod
    def min(*xs: float) -> float:
        return min(xs) if xs else _math.inf


class console:  # noqa: N801 - JS spelling
    @staticmethod
    def log(*args: Any) -> None:
        _log.info(" ".join(str(a) for a in args))

    info = log
    debug = log

    @staticmethod
    def warn(*args: Any) -> None:
        _log.warning(" ".join(str(a) for a in args))

    @staticmethod
    def error(*args: Any) -> None:
        _log.error(" ".join(str(a) for a in args))


class Request(_Request):
    """duro's ``Request``, with ``Request.new(url, init)`` as Python Workers code writes it."""

    __slots__ = ()

    @classmethod
    def new(cls, url: Any, init: Any = None, **kwargs: Any) -> _Request:
        return _Request(url if isinstance(url, _Request) else str(url), **dict(init or {}, **kwargs))


class Error:
    """``Error.new(message)`` makes the exception Cloudflare code raises as a JS error: a
    :class:`~duro.errors.JsException` (catchable as ``pyodide.ffi.JsException``)."""

    @staticmethod
    def new(message: str = "") -> JsException:
        return JsException(message)


class Promise:
    """``Promise.resolve``/``reject``/``all``/``new(executor)`` as awaitables on the running loop."""

    @staticmethod
    def resolve(value: Any = None) -> "asyncio.Future[Any]":
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(value)
        return fut

    @staticmethod
    def reject(error: Any) -> "asyncio.Future[Any]":
        fut = asyncio.get_running_loop().create_future()
        fut.set_exception(error if isinstance(error, BaseException) else JsException(str(error)))
        return fut

    @staticmethod
    def all(awaitables: Any) -> "asyncio.Future[list[Any]]":
        return asyncio.gather(*awaitables)

    @staticmethod
    def new(executor: Callable[[Callable[[Any], None], Callable[[Any], None]], Any]) -> "asyncio.Future[Any]":
        fut = asyncio.get_running_loop().create_future()

        def resolve(value: Any = None) -> None:
            if not fut.done():
                fut.set_result(value)

        def reject(error: Any = None) -> None:
            if not fut.done():
                fut.set_exception(error if isinstance(error, BaseException) else JsException(str(error)))
        try:
            executor(resolve, reject)
        except Exception as e:
            reject(e)
        return fut


class TextEncoder:
    """``TextEncoder.new().encode(text)`` gives UTF-8 ``bytes``."""

    encoding = "utf-8"

    @classmethod
    def new(cls) -> "TextEncoder":
        return cls()

    def encode(self, text: str = "") -> bytes:
        return text.encode()


class TextDecoder:
    """``TextDecoder.new(label="utf-8").decode(data)`` gives ``str``."""

    def __init__(self, label: str = "utf-8", options: Any = None) -> None:
        self.encoding = label.lower()

    @classmethod
    def new(cls, label: str = "utf-8", options: Any = None) -> "TextDecoder":
        return cls(label, options)

    def decode(self, data: Any = b"") -> str:
        return bytes(data).decode(self.encoding, errors="replace")


class Uint8Array:
    """``Uint8Array.new(length | bytes | list)`` gives a ``bytearray`` (a body duro accepts)."""

    @staticmethod
    def new(init: Any = 0, *_args: Any) -> bytearray:
        return bytearray(init)

    @staticmethod
    def from_(items: Any) -> bytearray:
        return bytearray(items)


setattr(Uint8Array, "from", Uint8Array.from_)


class crypto:  # noqa: N801 - JS spelling
    """``crypto.randomUUID()`` and ``crypto.getRandomValues(buffer)`` (``crypto.subtle`` is not
    provided: use Python's ``hashlib``/``hmac``)."""

    @staticmethod
    def randomUUID() -> str:  # noqa: N802 - JS spelling
        return str(uuid.uuid4())

    @staticmethod
    def getRandomValues(buffer: bytearray) -> bytearray:  # noqa: N802 - JS spelling
        buffer[:] = os.urandom(len(buffer))
        return buffer


class performance:  # noqa: N801 - JS spelling
    @staticmethod
    def now() -> float:
        return time.perf_counter() * 1000.0


undefined: Any = None  # JavaScript's undefined arrives in Python as None


def encodeURIComponent(text: Any) -> str:  # noqa: N802 - JS spelling
    return quote(str(text), safe="-_.!~*'()")


def decodeURIComponent(text: str) -> str:  # noqa: N802 - JS spelling
    return unquote(text)


def btoa(text: str) -> str:
    return base64.b64encode(text.encode("latin-1")).decode("ascii")


def atob(data: str) -> str:
    return base64.b64decode(data).decode("latin-1")


def setTimeout(callback: Callable[..., Any], ms: float = 0, *args: Any) -> asyncio.TimerHandle:  # noqa: N802
    """Call ``callback(*args)`` after ``ms`` milliseconds on the running loop; a coroutine it
    returns is run as background work (``wait_until``). Returns the handle ``clearTimeout`` takes."""
    loop = asyncio.get_running_loop()

    def fire() -> None:
        result = callback(*args)
        if asyncio.iscoroutine(result):
            from .workers import wait_until
            wait_until(result)
    return loop.call_later(max(ms, 0) / 1000.0, fire)


def clearTimeout(handle: Any) -> None:  # noqa: N802 - JS spelling
    if handle is not None:
        handle.cancel()


async def fetch(resource: Any, init: Any = None, **kwargs: Any) -> Any:
    """JavaScript's ``fetch(resource, init)``: ``workers.fetch`` with the init options."""
    from .workers import fetch as _fetch
    opts = dict(init or {}, **kwargs)
    return await _fetch(resource, method=opts.get("method"), headers=opts.get("headers"), body=opts.get("body"))


# Names that need a JavaScript engine or a Cloudflare-only service, and why; anything else is
# simply not provided. Both fail the same way (``_missing.missing``), with this reason when known.
_REFUSED = {
    "HTMLRewriter": "it is Cloudflare's streaming HTML rewriter; parse HTML with a Python library instead",
    "caches": "the Workers Cache API is not part of duro",
    "Blob": "duro bodies are bytes; pass bytes or str",
    "FormData": "Request.form_data() and FormData are not implemented",
    "ReadableStream": "duro bodies are bytes held in memory; there are no streams",
    "WritableStream": "duro bodies are bytes held in memory; there are no streams",
    "TransformStream": "duro bodies are bytes held in memory; there are no streams",
    "ArrayBuffer": "use bytes or bytearray",
    "DataView": "use bytes, bytearray or the struct module",
    "Map": "a JS Map has no Python spelling in duro; use dict",
    "Set": "a JS Set has no Python spelling in duro; use set",
    "RegExp": "use Python's re module",
    "BigInt": "Python ints are arbitrary precision",
    "Number": "use int or float",
    "process": "there is no Node.js process object; use os.environ",
    "eval": "duro runs no JavaScript",
    "Function": "duro runs no JavaScript",
    "document": "there is no DOM in a Worker",
    "window": "there is no DOM in a Worker",
    "XMLHttpRequest": "not available in Workers; use fetch",
}
for _typed in ("Int8Array", "Uint8ClampedArray", "Int16Array", "Uint16Array", "Int32Array", "Uint32Array",
               "Float32Array", "Float64Array", "BigInt64Array", "BigUint64Array"):
    _REFUSED[_typed] = "only Uint8Array is provided (as bytearray); use the array or struct module"


def __getattr__(name: str) -> Any:
    if name in ("WebSocketPair", "WebSocketRequestResponsePair", "WebSocket"):
        from ..api import websocket
        return getattr(websocket, name)
    if name == "globalThis":
        import sys
        return sys.modules[__name__]
    if name.startswith("__"):
        raise AttributeError(name)
    raise missing("js", name, _REFUSED.get(name))
