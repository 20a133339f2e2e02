"""The operator's part of the configuration: the admin listener (``admin`` table), the mode of
the data files duro creates (``file_mode``) and cluster membership (``cluster`` table). Read from ``[tool.duro]`` or wrangler's ``duro``
section by ``config.py``; every mistake is a :class:`ConfigError` naming the key. Only validates.
"""

from __future__ import annotations

import dataclasses
import pathlib
from dataclasses import dataclass
from typing import Any

from duro.errors import ConfigError

__all__ = ["AdminConfig", "ClusterConfig", "FILE_MODES", "parse_admin", "parse_cluster", "parse_cluster_urls", "parse_lease_ttl", "parse_monitor_urls",
           "parse_file_mode"]

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


CLUSTER_KEYS = ("servers", "node", "lease_ttl", "monitor")
# Seconds a node's registration outlives its last renewal: a dead node's objects move after about
# this long, and a NATS leader election longer than it makes every node stop writing meanwhile.
LEASE_TTL_DEFAULT = 3
LEASE_TTL_MAX = 300


@dataclass(frozen=True)
class ClusterConfig:
    """Cluster mode (``duro serve --cluster``): the NATS ``servers`` (``nats://HOST:PORT`` each) and
    this node's name. No servers: the embedded default, one machine."""

    servers: tuple[str, ...] = ()
    node: str | None = None
    lease_ttl: int = LEASE_TTL_DEFAULT  # whole seconds (parse_lease_ttl)
    # The servers' monitoring endpoints (http://HOST:PORT), read at start to check that they fsync
    # before acknowledging; none: each server's host on the default monitoring port (cluster/settings.py).
    monitor: tuple[str, ...] = ()


def parse_cluster_urls(raw: Any, file: str | None, key: str) -> tuple[str, ...]:
    """A list (or a comma-separated string) of ``nats://HOST:PORT`` URLs."""
    items = [u.strip() for u in raw.split(",")] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        raise ConfigError(f"must list NATS servers as nats://HOST:PORT, not {_show(raw)}", file=file, key=key)
    out = []
    for u in items:
        scheme, sep, rest = u.partition("://") if isinstance(u, str) else ("", "", "")
        host, colon, port = rest.rpartition(":")
        if scheme not in ("nats", "tls") or not sep or not host or not colon or not port.isdigit() \
                or not 0 < int(port) < 65536:
            raise ConfigError(f"{_show(u)} is not a NATS server address: use nats://HOST:PORT", file=file, key=key)
        out.append(u)
    return tuple(out)


def parse_monitor_urls(raw: Any, file: str | None, key: str) -> tuple[str, ...]:
    """A list (or a comma-separated string) of ``http://HOST:PORT`` monitoring URLs."""
    items = [u.strip() for u in raw.split(",")] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        raise ConfigError(f"must list the NATS servers' monitoring endpoints as http://HOST:PORT, not {_show(raw)}",
                          file=file, key=key)
    out = []
    for u in items:
        scheme, sep, rest = u.partition("://") if isinstance(u, str) else ("", "", "")
        host, colon, port = rest.rstrip("/").rpartition(":")
        if scheme not in ("http", "https") or not sep or not host or not colon or not port.isdigit() \
                or not 0 < int(port) < 65536:
            raise ConfigError(f"{_show(u)} is not a monitoring endpoint: use http://HOST:PORT (nats-server's "
                              "http setting)", file=file, key=key)
        out.append(u.rstrip("/"))
    return tuple(out)


def parse_cluster_node(v: Any, file: str | None, key: str) -> str:
    if not isinstance(v, str) or not v or len(v) > 200 or not all(c.isalnum() or c in "-_" for c in v):
        raise ConfigError(f"a node name is 1-200 letters, digits, '-' or '_', not {_show(v)}", file=file, key=key)
    return v


def parse_lease_ttl(v: Any, file: str | None, key: str) -> int:
    """Whole seconds, 1 to ``LEASE_TTL_MAX``."""
    if isinstance(v, str) and v.strip().isdigit():
        v = int(v.strip())
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= LEASE_TTL_MAX:
        raise ConfigError(f"the lease TTL is whole seconds from 1 to {LEASE_TTL_MAX} (default {LEASE_TTL_DEFAULT}), "
                          f"not {_show(v)}", file=file, key=key)
    return v


def parse_cluster(raw: Any, file: str | None, key: str) -> ClusterConfig:
    """The ``cluster`` table: ``servers``, ``node`` and ``lease_ttl``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"must be a table, not {_show(raw)}", file=file, key=key)
    for k in raw:
        if k not in CLUSTER_KEYS:
            raise ConfigError(f"unknown key; valid keys: {', '.join(CLUSTER_KEYS)}", file=file, key=f"{key}.{k}")
    servers = parse_cluster_urls(raw["servers"], file, f"{key}.servers") if "servers" in raw else ()
    node = parse_cluster_node(raw["node"], file, f"{key}.node") if "node" in raw else None
    ttl = parse_lease_ttl(raw["lease_ttl"], file, f"{key}.lease_ttl") if "lease_ttl" in raw else LEASE_TTL_DEFAULT
    monitor = parse_monitor_urls(raw["monitor"], file, f"{key}.monitor") if "monitor" in raw else ()
    return ClusterConfig(servers, node, ttl, monitor)
