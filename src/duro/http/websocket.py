"""WebSocket connections at the front. Until hibernatable WebSockets land, upgrades are refused
with close code 1011 and a clear log line."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("duro.http")


async def websocket_handler(front: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
    log.warning("WebSocket upgrade for %s refused: WebSockets are not enabled in this build", scope.get("path"))
    await send({"type": "websocket.close", "code": 1011})
