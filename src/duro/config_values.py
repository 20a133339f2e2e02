"""The checks every configuration value goes through (``config.py``, ``config_assets.py``): each
returns the value, or raises a :class:`ConfigError` naming the file, the dotted key and what is
allowed. ``show`` renders a wrong value for such a message."""

from __future__ import annotations

import difflib
import json
import keyword
from typing import Any

from duro.errors import ConfigError

__all__ = ["show", "table", "array", "string", "string_list", "ident", "project_name", "choice", "check_keys"]


def show(v: Any) -> str:
    if isinstance(v, (str, bool)) or v is None:
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (dict, list)):
        return "a table {...}" if isinstance(v, dict) else "an array [...]"
    return repr(v)


def table(v: Any, file: str, key: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ConfigError(f"must be a table/object, not {show(v)}", file=file, key=key)
    return v


def array(v: Any, file: str, key: str) -> list[Any]:
    if not isinstance(v, list):
        raise ConfigError(f"must be an array, not {show(v)}", file=file, key=key)
    return v


def string(v: Any, file: str, key: str) -> str:
    if v is None:
        raise ConfigError("missing; must be a non-empty string", file=file, key=key)
    if not isinstance(v, str) or not v:
        raise ConfigError(f"must be a non-empty string, not {show(v)}", file=file, key=key)
    return v


def string_list(v: Any, file: str, key: str) -> list[str]:
    return [string(s, file, f"{key}[{i}]") for i, s in enumerate(array(v, file, key))]


def ident(v: Any, file: str, key: str) -> str:
    v = string(v, file, key)
    if not v.isidentifier() or keyword.iskeyword(v):
        raise ConfigError(f"{show(v)} is not a valid Python identifier "
                          f"(letters, digits and _, not starting with a digit, not a keyword)", file=file, key=key)
    return v


def project_name(v: Any, file: str, key: str) -> str:
    v = string(v, file, key)
    if v in (".", "..") or any(c in v for c in '/\\\0') or v != v.strip():
        raise ConfigError(f"{show(v)} cannot be used as a project name (it names directories); "
                          f"use letters, digits, - and _", file=file, key=key)
    return v


def choice(v: Any, allowed: tuple[str, ...], file: str, key: str) -> str:
    if not isinstance(v, str) or v not in allowed:
        raise ConfigError(f"must be one of {', '.join(json.dumps(a) for a in allowed)}; not {show(v)}",
                          file=file, key=key)
    return v


def check_keys(table: dict[str, Any], valid: tuple[str, ...], file: str, key: str) -> None:
    for k in table:
        if k not in valid:
            close = difflib.get_close_matches(k, valid, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(f"unknown key; {hint}valid keys: {', '.join(valid)}", file=file, key=f"{key}.{k}")
