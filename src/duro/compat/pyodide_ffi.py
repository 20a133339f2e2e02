"""``pyodide.ffi`` for code written for Cloudflare Python Workers: conversions are identities in
CPython, because duro's values are already Python values."""

from __future__ import annotations

from typing import Any

__all__ = ["JsProxy", "create_proxy", "create_once_callable", "to_js"]


class JsProxy:
    """Placeholder type so ``isinstance(x, JsProxy)`` checks work (always False for duro values)."""


def to_js(value: Any, *args: Any, **kwargs: Any) -> Any:
    return value


def create_proxy(value: Any, *args: Any, **kwargs: Any) -> Any:
    return value


def create_once_callable(value: Any, *args: Any, **kwargs: Any) -> Any:
    return value
