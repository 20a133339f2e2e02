"""The operator's part of the configuration: the admin listener (``admin`` table) and the mode of
the data files duro creates (``file_mode``). Read from ``[tool.duro]`` or wrangler's ``duro``
section by ``config.py``; every mistake is a :class:`ConfigError` naming the key. Only validates.
"""

from __future__ import annotations

import dataclasses
import pathlib
from dataclasses import dataclass
from typing import Any

from duro.errors import ConfigError

__all__ = ["AdminConfig", "FILE_MODES", "parse_admin", "parse_file_mode"]

ADMIN_KEYS = ("enabled", "host", "port", "import_dir")
# The data files' modes an operator may choose: owner only, or owner plus the group (a backup
# agent, say). Anything wider would hand object data to every local user.
FILE_MODES = {"0600": 0o600, "0640": 0o640}


@dataclass(frozen=True)
class AdminConfig:
    """The admin listener: the admin API (``duro objects --server``, ``duro tail``), ``/metrics``
    and the dashboard, on its own address, never on the serving port.

    ``port`` 0 lets the system pick a free port; the address in use is written to
    ``DATA/admin.url`` either way, where the CLI finds it. ``import_dir``: the only folder
    whose files the admin ``import`` operation reads (None: the server imports nothing)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 0
    import_dir: pathlib.Path | None = None


def _show(v: Any) -> str:
    return repr(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)


def parse_admin(raw: Any, root: pathlib.Path, file: str | None, key: str,
                base: AdminConfig | None = None) -> AdminConfig:
    """The ``admin`` table (or CLI overrides: ``file`` None, keys as given)."""
    base = base or AdminConfig()
    if not isinstance(raw, dict):
        raise ConfigError(f"must be a table, not {_show(raw)}", file=file, key=key)
    changes: dict[str, Any] = {}
    for k, v in raw.items():
        lk = f"{key}.{k}" if key else k
        if k not in ADMIN_KEYS:
            raise ConfigError(f"unknown key; valid keys: {', '.join(ADMIN_KEYS)}", file=file, key=lk)
        if k == "enabled":
            if not isinstance(v, bool):
                raise ConfigError(f"must be true or false, not {_show(v)}", file=file, key=lk)
        elif k == "host":
            if not isinstance(v, str) or not v or any(c.isspace() for c in v):
                raise ConfigError(f"must be an address to listen on, e.g. \"127.0.0.1\", not {_show(v)}",
                                  file=file, key=lk)
        elif k == "port":
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 65535:
                raise ConfigError(f"must be a port number 0..65535 (0: any free port), not {_show(v)}",
                                  file=file, key=lk)
        elif k == "import_dir":
            if not isinstance(v, str) or not v:
                raise ConfigError(f"must be a folder path, not {_show(v)}", file=file, key=lk)
            v = (root / v).resolve()
        changes[k] = v
    return dataclasses.replace(base, **changes)


def parse_file_mode(v: Any, file: str | None, key: str) -> int:
    """``"0600"`` (the default) or ``"0640"``, as a string: TOML and JSON have no octal that
    wrangler's JSON would keep."""
    if isinstance(v, str) and v in FILE_MODES:
        return FILE_MODES[v]
    raise ConfigError(f"must be one of {', '.join(repr(m) for m in FILE_MODES)} (a string), not {_show(v)}",
                      file=file, key=key)
