"""A small ``js`` module for Cloudflare Python Workers code: ``Date``, ``WebSocketPair``,
``Response``, ``JSON``, ``console``, ``Object``."""

from __future__ import annotations

import json as _json
import logging
import time
from typing import Any

from ..api import Response

__all__ = ["Date", "JSON", "Object", "Response", "WebSocketPair", "console"]

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
