"""An in-process WebSocket client for tests: it speaks ASGI to the real front (handshake, pump,
hibernation, auto-responses) without a socket, so a test can count constructor calls, hold the
durability barrier or force the hibernation sweep deterministically.

    async with LocalApp(project, data) as app:
        ws = await app.websocket("/room/a")
        await ws.send("hello")
        assert await ws.receive() == "hello"
        await ws.close()
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["LocalWebSocket", "WebSocketClosed", "WebSocketRefused"]


class WebSocketClosed(Exception):
    """The server closed the connection (``code``, ``reason``)."""

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"closed by the server: {code} {reason!r}")


class WebSocketRefused(Exception):
    """The upgrade was answered with an HTTP response instead of 101."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body
        super().__init__(f"upgrade refused with HTTP {status}: {body[:200]!r}")


class LocalWebSocket:
    """One client connection to an :class:`~duro.http.AsgiFront`, in-process."""

    def __init__(self, front: Any, path: str, headers: list[tuple[str, str]] | None = None) -> None:
        self._front = front
        path, _, query = path.partition("?")
        hdrs = [("host", "localhost"), ("upgrade", "websocket"), ("connection", "Upgrade"),
                ("sec-websocket-version", "13"), ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")]
        hdrs += list(headers or [])
        self._scope = {"type": "websocket", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
                       "headers": [(k.lower().encode(), v.encode()) for k, v in hdrs], "scheme": "ws",
                       "server": ("localhost", 80), "client": ("127.0.0.1", 1), "subprotocols": [],
                       "extensions": {"websocket.http.response": {}}}
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[Any] = asyncio.Queue()
        self._opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._refusal: tuple[int, list[Any]] | None = None
        self._ended = False  # no more frames reach the app
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def connect(self, timeout: float = 10.0) -> "LocalWebSocket":
        self._to_app.put_nowait({"type": "websocket.connect"})
        self._task = asyncio.get_running_loop().create_task(self._run())
        await asyncio.wait_for(asyncio.shield(self._opened), timeout)
        return self

    async def _run(self) -> None:
        try:
            await self._front(self._scope, self._receive, self._send)
        finally:
            if not self._opened.done():
                self._opened.set_exception(RuntimeError("the app ended the connection without answering"))
            self._from_app.put_nowait(None)

    async def _receive(self) -> dict[str, Any]:
        return await self._to_app.get()

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            self._opened.set_result(None)
        elif kind == "websocket.http.response.start":
            self._refusal = (message["status"], [])
        elif kind == "websocket.http.response.body":
            assert self._refusal is not None
            self._refusal[1].append(message.get("body", b""))
            if not message.get("more_body") and not self._opened.done():
                self._opened.set_exception(WebSocketRefused(self._refusal[0], b"".join(self._refusal[1])))
        elif kind == "websocket.send":
            if self._ended:
                raise OSError("client disconnected")
            text = message.get("text")
            self._from_app.put_nowait(text if text is not None else message.get("bytes"))
        elif kind == "websocket.close":
            if not self._opened.done():
                self._opened.set_exception(WebSocketRefused(403, b""))
                return
            if self._ended:
                raise OSError("client disconnected")
            code, reason = message.get("code", 1000), message.get("reason") or ""
            self._from_app.put_nowait(WebSocketClosed(code, reason))
            self._ended = True
            # As uvicorn does: the app's own close ends its receive loop.
            self._to_app.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})

    # ------------------------------------------------------------------ the client's API
    async def send(self, data: str | bytes) -> None:
        if self._ended:
            raise RuntimeError("the connection is closed")
        key = "text" if isinstance(data, str) else "bytes"
        self._to_app.put_nowait({"type": "websocket.receive", key: data})

    async def receive(self, timeout: float = 10.0) -> str | bytes:
        """The next message from the server; raises :class:`WebSocketClosed` when it closed."""
        item = await asyncio.wait_for(self._from_app.get(), timeout)
        if item is None:
            self._from_app.put_nowait(None)
            raise WebSocketClosed(self.close_code or 1006, self.close_reason or "")
        if isinstance(item, WebSocketClosed):
            self.close_code, self.close_reason = item.code, item.reason
            self._from_app.put_nowait(None)
            raise item
        return item

    def pending(self) -> int:
        """Messages received and not yet read."""
        return self._from_app.qsize()

    async def close(self, code: int = 1000, reason: str = "", timeout: float = 10.0) -> None:
        """Send a Close frame and wait for the server side to finish."""
        if not self._ended:
            self._ended = True
            self._to_app.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        await self.wait_closed(timeout)

    async def drop(self, timeout: float = 10.0) -> None:
        """Vanish without a Close frame (the server sees the connection lost)."""
        if not self._ended:
            self._ended = True
            self._to_app.put_nowait({"type": "websocket.disconnect", "code": 1006})
        await self.wait_closed(timeout)

    async def wait_closed(self, timeout: float = 10.0) -> None:
        if self._task is not None:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
