"""A small ``js`` module for Cloudflare Python Workers code: ``Date``, ``WebSocketPair``,
``Response``, ``Headers``, ``URL``, ``JSON``, ``console``, ``Object``.

JavaScript constructors are spelled ``X.new(...)`` from Python (``Response.new("hi")``,
``URL.new(request.url)``), as Cloudflare's Python Workers examples write them."""

from __future__ import annotations

import json as _json
import logging
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

from ..api import Response
from ..api.fetch import Headers

__all__ = ["Date", "Headers", "JSON", "Object", "Response", "URL", "URLSearchParams", "WebSocketPair", "console"]


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


class console:  # noqa: N801 - JS spelling
    @staticmethod
    def log(*args: Any) -> None:
        _log.info(" ".join(str(a) for a in args))

    info = log

    @staticmethod
    def warn(*args: Any) -> None:
        _log.warning(" ".join(str(a) for a in args))

    @staticmethod
    def error(*args: Any) -> None:
        _log.error(" ".join(str(a) for a in args))


def __getattr__(name: str) -> Any:
    if name in ("WebSocketPair", "WebSocketRequestResponsePair", "WebSocket"):
        from ..api import websocket
        return getattr(websocket, name)
    raise AttributeError(f"module 'js' has no attribute {name!r} in duro")
