"""``duro dev``'s hand trigger for cron: ``GET /__scheduled?cron=<expr>`` (and Python Workers'
``/cdn-cgi/handler/scheduled``) runs the entrypoint's ``scheduled()`` once, as ``wrangler dev
--test-scheduled`` does, and answers ``Ran scheduled event`` when it has finished.

It wraps the front in ``duro dev`` only: ``duro serve`` never exposes it. ``cron`` is passed as given
(it need not be one of the configured triggers, as with wrangler); ``time`` sets
``controller.scheduled_time`` (epoch ms; default: now).
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs

__all__ = ["SCHEDULED_PATHS", "ScheduledEndpoint"]

log = logging.getLogger("duro.cli")

SCHEDULED_PATHS = frozenset({"/__scheduled", "/cdn-cgi/handler/scheduled"})
TEXT_RAN = "Ran scheduled event"

Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class ScheduledEndpoint:
    """ASGI middleware: the scheduled paths are answered here, everything else goes to ``front``."""

    def __init__(self, front: Any) -> None:
        self.front = front
        self.guard = front.guard  # the front's limits hold for these paths too

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in SCHEDULED_PATHS:
            await self.front(scope, receive, send)
            return
        while True:  # the body, if any, means nothing here
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            if not message.get("more_body", False):
                break
        query = parse_qs((scope.get("query_string") or b"").decode("latin-1"), keep_blank_values=True)
        cron = query.get("cron", [""])[0]
        status, text = 200, TEXT_RAN
        try:
            raw_time = query.get("time", [None])[0]
            when = int(float(raw_time)) if raw_time else None
        except ValueError:
            status, text = 400, f"time must be epoch milliseconds, not {raw_time!r}"
        else:
            try:
                await self.front.app.scheduled(cron, when)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.error("scheduled() for cron %r failed:\n%s", cron, "".join(traceback.format_exception(e)))
                status, text = 500, f"scheduled() failed: {type(e).__name__}: {e}"
        body = text.encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain;charset=UTF-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
