"""What the front protects itself with: its limits, its shared counters, and one log line per burst.

``FrontLimits`` is the front's slice of the project's limits. ``FrontGuard`` is the state every
connection shares: the connection cap (derived from the open-file limit so that storage always has
descriptors left), the bytes of request bodies being read, and the burst logs. This module never
touches a socket; ``protocol.py`` and ``server.py`` do.
"""

from __future__ import annotations

import dataclasses
import logging
import resource
import time
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["FrontLimits", "FrontGuard", "BurstLog", "LineCap", "cap_log_lines", "plain_response", "connection_cap"]

# Descriptors kept back, beyond the open databases', for everything else a server holds: the
# listening socket, log files, the data-dir lock, outgoing connections of objects, the barrier.
SPARE_FDS = 256


@dataclass(frozen=True)
class FrontLimits:
    """The front's limits (``[tool.duro.limits]``; docs/config.md). Timeouts of 0 are off."""

    max_request_body: int = 100 * 1024 * 1024
    max_url_bytes: int = 16 * 1024
    max_header_bytes: int = 128 * 1024
    max_header_count: int = 100
    header_timeout: float = 20.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 15.0
    max_connections: int = 0  # 0: connection_cap() derives it at start
    max_body_bytes_in_flight: int = 256 * 1024 * 1024
    overload_retry_after: int = 1
    max_log_line: int = 4096

    @classmethod
    def from_limits(cls, limits: Any) -> "FrontLimits":
        """The fields of ``limits`` (a ``config.Limits``) that the front uses."""
        return cls(**{f.name: getattr(limits, f.name) for f in dataclasses.fields(cls) if hasattr(limits, f.name)})


def connection_cap(configured: int, storage_descriptors: int) -> int:
    """How many connections the front keeps open at once. The open-file limit must hold the
    descriptors the open databases may take (``Runtime.storage_descriptors()``) plus
    ``SPARE_FDS``; the rest is for connections. A configured cap is lowered to that, never raised:
    a storage write must never fail for want of a descriptor."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        room = 1 << 20
    else:
        room = soft - storage_descriptors - SPARE_FDS
    room = max(16, room)
    return room if configured <= 0 else min(configured, room)


class BurstLog:
    """One log line per burst: the first event of a burst is logged, the rest are counted, and the
    next burst's line says how many the previous one had. A burst ends after ``quiet`` seconds
    without an event."""

    def __init__(self, logger: logging.Logger, quiet: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._quiet = quiet
        self._clock = clock
        self._last: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def note(self, key: str, message: str) -> bool:
        """Count one event of kind ``key``; log ``message`` if it starts a burst. True if logged."""
        now = self._clock()
        last = self._last.get(key)
        self._last[key] = now
        if last is not None and now - last <= self._quiet:
            self._counts[key] = self._counts.get(key, 0) + 1
            return False
        before = self._counts.pop(key, 0)
        tail = f" (the previous burst had {before + 1})" if before else ""
        self._log.warning("%s; further ones are counted, not logged, until %gs pass without one%s",
                          message, self._quiet, tail)
        return True


class FrontGuard:
    """The state the front's connections share. ``statistics()`` shows it."""

    def __init__(self, limits: FrontLimits, logger: logging.Logger) -> None:
        self.limits = limits
        self.max_connections = limits.max_connections if limits.max_connections > 0 else 1 << 20
        self.body_bytes_in_flight = 0
        self.refused: dict[int, int] = {}  # status -> count
        self.bursts = BurstLog(logger)
        self.max_log_line = limits.max_log_line
        # Connections with no request in progress (never sent a byte, or idle between keep-alive
        # requests), oldest first: at the cap, the oldest is closed to make room for a new one.
        self.idle: dict[Any, None] = {}
        self.evicted_idle = 0
        # uvicorn's set of open connections (WebSockets too), for /metrics; set by the first one.
        self.connections: set[Any] | None = None
        # The server began a graceful shutdown: long responses (duro tail) end.
        self.stopping = False

    def make_room(self, open_connections: int) -> bool:
        """Whether one more connection fits: below the cap, or after closing the longest-idle
        connection. Idle connections must not lock clients out until their timeouts pass."""
        if open_connections < self.max_connections:
            return True
        while self.idle:
            oldest = next(iter(self.idle))
            del self.idle[oldest]
            if oldest.close_idle():
                self.evicted_idle += 1
                return True
        return False

    def set_connection_cap(self, storage_descriptors: int) -> None:
        self.max_connections = connection_cap(self.limits.max_connections, storage_descriptors)

    def refusal(self, status: int, message: str) -> None:
        """Count a refusal and log it, once per burst of its kind."""
        self.refused[status] = self.refused.get(status, 0) + 1
        self.bursts.note(f"{status}:{message[:40]}", f"answering {status}: {message}")

    def reserve_body(self, n: int) -> bool:
        """Take ``n`` more bytes of request body in flight; False (nothing taken) past the cap."""
        if self.body_bytes_in_flight + n > self.limits.max_body_bytes_in_flight:
            return False
        self.body_bytes_in_flight += n
        return True

    def release_body(self, n: int) -> None:
        self.body_bytes_in_flight -= n

    def statistics(self) -> dict[str, Any]:
        return {"max_connections": self.max_connections, "body_bytes_in_flight": self.body_bytes_in_flight,
                "refused": dict(self.refused), "idle": len(self.idle), "evicted_idle": self.evicted_idle}


_REASONS = {408: "Request Timeout", 413: "Content Too Large", 414: "URI Too Long",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}


def plain_response(status: int, message: str, *, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 answer that closes the connection: written straight to a transport
    when the request never reached the application."""
    body = (message + "\n").encode()
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, '')}", "content-type: text/plain; charset=utf-8",
            f"content-length: {len(body)}", "connection: close"]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class LineCap(logging.Filter):
    """Cut every log record to ``max_chars`` characters, traceback included: a 10 MB object name
    or a request echoed in an error must not become a 10 MB log line. The head and the tail are
    kept (the tail has the exception's type and message)."""

    def __init__(self, max_chars: int) -> None:
        super().__init__()
        self.max_chars = max(256, max_chars)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        full = text + ("\n" + record.exc_text if record.exc_text else "")
        if record.stack_info:
            full += "\n" + record.stack_info
        if len(full) <= self.max_chars:
            return True
        half = self.max_chars // 2 - 40
        cut = len(full) - 2 * half
        record.msg = f"{full[:half]} …[{cut} characters cut]… {full[-half:]}"
        record.args = None
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


def cap_log_lines(max_chars: int, loggers: tuple[str, ...] = ("", "uvicorn", "uvicorn.error", "uvicorn.access")) -> None:
    """Install :class:`LineCap` on the handlers of ``loggers`` (the root logger's and uvicorn's,
    which has handlers of its own)."""
    cap = LineCap(max_chars)
    for name in loggers:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, LineCap) for f in handler.filters):
                handler.addFilter(cap)
