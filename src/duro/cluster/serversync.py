"""At a node's start: do the NATS servers fsync before they acknowledge a write?

A cluster node acknowledges a commit once JetStream acknowledged its append; that is durable only
if the servers run with ``sync_interval: always`` (the default fsyncs every 2 minutes, and
coinciding crashes lose acknowledged writes: reference/cluster-on-nats.md §2). The client protocol
does not tell, but each server's monitoring endpoint does (``/varz``: ``jetstream.config.
sync_always``, and the server's version). So a node reads ``/varz`` of every server it is given
(``--nats-monitor`` / ``[tool.duro.cluster] monitor``), or, when none are given, of each server's
host on nats-server's usual monitoring port (8222), and:

- refuses to start, saying which server and what to set, if one answers that it fsyncs lazily, or
  runs a version older than 2.12, or (given explicitly) does not answer;
- starts, with a warning in its log that says the check could not be made, when none was given
  and nothing answers on the usual port (monitoring is off, or on another port).

Never: start on servers known to acknowledge before they fsync.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from typing import Any

from ..errors import ConfigError

__all__ = ["check_server_sync", "monitor_urls", "DEFAULT_MONITOR_PORT", "MIN_VERSION"]

log = logging.getLogger("duro.cluster")

DEFAULT_MONITOR_PORT = 8222
MIN_VERSION = (2, 12)


def monitor_urls(servers: tuple[str, ...] | list[str]) -> list[str]:
    """Each NATS server's host on the usual monitoring port, once per host."""
    out: list[str] = []
    for url in servers:
        host = url.partition("://")[2].rpartition(":")[0]
        candidate = f"http://{host}:{DEFAULT_MONITOR_PORT}"
        if host and candidate not in out:
            out.append(candidate)
    return out


def _varz(url: str, timeout: float) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/varz", timeout=timeout) as r:  # noqa: S310 - the operator's URL
        return json.loads(r.read())  # type: ignore[no-any-return]


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for p in text.split("-")[0].split("."):
        if not p.isdigit():
            break
        parts.append(int(p))
    return tuple(parts)


def problem(url: str, varz: dict[str, Any]) -> str | None:
    """What makes the server behind ``url`` unfit for cluster mode, from its ``/varz``; None if fit."""
    name = varz.get("server_name") or url
    version = str(varz.get("version", ""))
    if _version(version) < MIN_VERSION:
        return (f"nats-server {name} ({url}) is version {version or 'unknown'}; cluster mode needs "
                f"{'.'.join(map(str, MIN_VERSION))} or newer (an older server cannot fsync before it acknowledges)")
    js = (varz.get("jetstream") or {}).get("config")
    if not js:
        return f"nats-server {name} ({url}) runs without JetStream: start it with JetStream on (-js, or a jetstream block)"
    if not js.get("sync_always"):
        every = js.get("sync_interval")
        lazily = f"every {every / 1e9:g} s" if isinstance(every, (int, float)) and every else "lazily"
        return (f"nats-server {name} ({url}) fsyncs JetStream writes {lazily}, not before it acknowledges them: "
                "a crash of servers could lose writes duro acknowledged. Set sync_interval: always in its "
                "jetstream block and restart it")
    return None


async def check_server_sync(servers: tuple[str, ...] | list[str], given: tuple[str, ...] | list[str],
                            *, timeout: float = 2.0) -> list[str]:
    """Refuse (ConfigError) servers that do not fsync before acknowledging (module doc). Returns
    the monitoring URLs that were checked."""
    urls = list(given) or monitor_urls(servers)
    results = await asyncio.gather(*(asyncio.to_thread(_varz, u, timeout) for u in urls), return_exceptions=True)
    checked: list[str] = []
    unreachable: list[str] = []
    for url, got in zip(urls, results):
        if isinstance(got, BaseException):
            if given:
                raise ConfigError(f"cannot read the NATS monitoring endpoint {url}/varz ({_why(got)}); the node "
                                  "checks there that the server fsyncs before it acknowledges. Give the servers' "
                                  "monitoring addresses (nats-server's http setting) with --nats-monitor") from None
            unreachable.append(url)
            continue
        bad = problem(url, got)
        if bad is not None:
            raise ConfigError(bad)
        checked.append(url)
    if unreachable:
        log.warning("could not check that the NATS servers fsync before they acknowledge (no monitoring endpoint "
                    "answered at %s): make sure they run with sync_interval: always, or give their monitoring "
                    "addresses with --nats-monitor so that the node checks", ", ".join(unreachable))
    if checked:
        log.info("the NATS servers at %s fsync before they acknowledge (sync_interval: always)", ", ".join(checked))
    return checked


def _why(e: BaseException) -> str:
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return str(e) or type(e).__name__
