"""duro's own WebSocket connection: an asyncio protocol around websockets' Sans-I/O core.

uvicorn keeps, for every open WebSocket, a protocol object with a queue, events, the ASGI scope
and a task suspended in ``receive()`` — about 16 KB of an idle hibernated socket's 20. This
protocol keeps the core (``ServerProtocol``) and a few slots. The handshake runs the ASGI
application as usual (``websocket.py``): it accepts or refuses with ASGI messages, then hands the
socket's channel over through the ``duro.adopt`` scope extension and its task ends. From then on
frames are turned into the same ASGI messages ``websocket.py`` handles (``handle_message``), by a
task that exists only while messages are waiting: an idle socket has no task.

It never buffers more than a few messages: reading pauses while deliveries are behind.
"""

from __future__ import annotations

import asyncio
import collections
import http
import logging
from typing import Any, Callable

from websockets.datastructures import Headers
from websockets.frames import Opcode
from websockets.http11 import Request, Response
from websockets.protocol import OPEN, State
from websockets.server import ServerProtocol

__all__ = ["WebSocketConnection"]

log = logging.getLogger("duro.http")
_core_log = logging.getLogger("duro.http.websocket_core")  # the core logs every open and close at INFO
_core_log.setLevel(logging.WARNING)

_PAUSE_AT = 8  # messages waiting for delivery before reading pauses
_CLOSE_TIMEOUT = 10.0  # seconds the peer has to answer our Close frame


class WebSocketConnection(asyncio.Protocol):
    """One WebSocket connection after the HTTP upgrade. ``handle`` is
    ``websocket.handle_message``: it takes one ASGI message and returns True once the
    connection's end has been delivered."""

    __slots__ = ("transport", "conn", "_connections", "_tasks", "_handle", "_runtime", "_channel", "_pending",
                 "_task", "_frames", "_text", "_ended", "_close_sent", "_accepted", "_denied", "_paused",
                 "_drained", "_close_timer", "_reading_paused")

    def __init__(self, transport: asyncio.Transport, server_state: Any, *, max_size: int,
                 handle: Callable[..., Any]) -> None:
        self.transport = transport
        self.conn = ServerProtocol(max_size=max_size, logger=_core_log)
        self._connections: set[Any] = server_state.connections
        self._tasks: set[asyncio.Task[Any]] = server_state.tasks
        self._handle = handle
        self._runtime: Any = None
        self._channel: Any = None
        self._pending: collections.deque[dict[str, Any]] | None = None
        self._task: asyncio.Task[Any] | None = None
        self._frames: list[bytes] | None = None
        self._text = False
        self._ended = False  # the connection's end is queued for delivery
        self._close_sent = False
        self._accepted = False
        self._denied = False
        self._paused = False  # writing
        self._drained: asyncio.Future[None] | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._reading_paused = False
        self._connections.add(self)

    # ------------------------------------------------------------------ handshake
    def start(self, head: bytes, app: Any, scope: dict[str, Any]) -> None:
        """Parse the upgrade request ``head`` and run ``app`` for the handshake."""
        self.conn.receive_data(head)
        request = next((e for e in self.conn.events_received() if isinstance(e, Request)), None)
        if request is None:  # pragma: no cover - httptools parsed the same bytes
            self._write_pending()
            self.transport.close()
            return
        response = self.conn.accept(request)
        if response.status_code != 101:  # not a valid WebSocket request: the core's answer
            self._denied = True
            self.conn.send_response(response)
            self._write_pending()
            self.transport.close()
            return
        scope["extensions"] = {"websocket.http.response": {}, "duro.adopt": self._adopt}
        state = {"response": response, "connected": False}

        async def receive() -> dict[str, Any]:
            if not state["connected"]:
                state["connected"] = True
                return {"type": "websocket.connect"}
            await asyncio.Future()  # adopted connections are never asked again
            raise AssertionError  # pragma: no cover

        async def send(message: dict[str, Any]) -> None:
            await self._send_handshake(message, state)

        task = asyncio.get_running_loop().create_task(self._run_handshake(app, scope, receive, send))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_handshake(self, app: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await app(scope, receive, send)
        except Exception:
            log.exception("the WebSocket handshake failed")
            if not self._accepted and not self._denied:
                self._deny(500, [], b"Internal Server Error")
                return
        if not self._accepted and not self._denied:
            self.transport.close()

    async def _send_handshake(self, message: dict[str, Any], state: dict[str, Any]) -> None:
        kind = message["type"]
        if self._accepted:
            await self.send(message)
            return
        if kind == "websocket.accept":
            if self.transport.is_closing():
                raise ConnectionError("the client left during the handshake")
            response = state.pop("response")
            del response.headers["Date"]
            for k, v in message.get("headers", []):
                response.headers[k.decode("latin-1")] = v.decode("latin-1")
            if message.get("subprotocol"):
                response.headers["Sec-WebSocket-Protocol"] = message["subprotocol"]
            self.conn.send_response(response)
            self._accepted = True
            self._write_pending()
            # The core's parser generator keeps the handshake request (its headers: ~3 KB) for the
            # connection's life. A fresh core in the OPEN state does not; swap unless the client
            # already sent something (it must wait for the 101, but may not).
            old = self.conn
            if not old.reader.buffer and not old.events:
                self.conn = ServerProtocol(state=OPEN, max_size=(old.max_message_size, old.max_fragment_size),
                                           logger=_core_log)
        elif kind == "websocket.http.response.start":
            state["deny"] = (message["status"], list(message.get("headers", [])))
        elif kind == "websocket.http.response.body":
            status, headers = state.pop("deny")
            self._deny(status, headers, message.get("body", b""))
        elif kind == "websocket.close":  # refused without a response: 403, as uvicorn does
            self._deny(403, [], b"")
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} during the WebSocket handshake")

    def _deny(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Answer the upgrade request with an HTTP response and close."""
        self._denied = True
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        h = Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers])
        h.setdefault("Connection", "close")
        h["Content-Length"] = str(len(body))
        h.setdefault("Content-Type", "text/plain; charset=utf-8")
        if not self.transport.is_closing():
            self.transport.write(Response(status, phrase, h, body).serialize())
        self.transport.close()

    def _adopt(self, runtime: Any, channel: Any) -> None:
        """The handshake is done: deliver this socket's messages from now on."""
        self._runtime = runtime
        self._channel = channel
        if self._pending:
            self._start_delivery()

    # ------------------------------------------------------------------ sending (the channel's transport)
    async def send(self, message: dict[str, Any]) -> None:
        if self._paused:
            loop = asyncio.get_running_loop()
            if self._drained is None:
                self._drained = loop.create_future()
            await asyncio.shield(self._drained)
        if self.transport.is_closing() or self._close_sent or self.conn.state is not OPEN:
            raise ConnectionError("the WebSocket connection is closed")
        kind = message["type"]
        if kind == "websocket.send":
            data = message.get("bytes")
            if data is not None:
                self.conn.send_binary(data)
            else:
                self.conn.send_text(message["text"].encode())
            self._write_pending()
        elif kind == "websocket.close":
            self._close_sent = True
            self.conn.send_close(message.get("code", 1000), message.get("reason", "") or "")
            self._write_pending()
            self._close_timer = asyncio.get_running_loop().call_later(_CLOSE_TIMEOUT, self.transport.close)
            self._queue({"type": "websocket.disconnect", "code": message.get("code", 1000),
                         "reason": message.get("reason", "") or ""})
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} on an open WebSocket")

    def _write_pending(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.transport.is_closing():
            out = b"".join(data)
            if out:
                self.transport.write(out)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None:
            if not self._drained.done():
                self._drained.set_result(None)
            self._drained = None

    # ------------------------------------------------------------------ receiving
    def data_received(self, data: bytes) -> None:
        conn = self.conn
        conn.receive_data(data)
        for event in conn.events_received():
            opcode = getattr(event, "opcode", None)
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                self._text = opcode is Opcode.TEXT
                self._frames = [event.data]
            elif opcode is Opcode.CONT and self._frames is not None:
                self._frames.append(event.data)
            else:
                continue  # pings are answered by the core; pongs need nothing; Close below
            if event.fin:
                self._message_done()
        self._write_pending()
        if conn.parser_exc is not None or conn.close_rcvd is not None or conn.state is State.CLOSED:
            self._peer_ended()

    def _message_done(self) -> None:
        frames, self._frames = self._frames or [], None
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        if self._close_sent:
            return  # the object closed this socket; its messages are no longer wanted
        if self._text:
            try:
                text = bytes(data).decode()
            except UnicodeDecodeError as e:
                reason = f"{e.reason} at position {e.start}"
                self.conn.fail(1007, reason)
                self._write_pending()
                self._queue({"type": "websocket.disconnect", "code": 1007, "reason": reason})
                self._close_sent = True
                self.transport.close()
                return
            self._queue({"type": "websocket.receive", "text": text})
        else:
            self._queue({"type": "websocket.receive", "bytes": bytes(data)})

    def _peer_ended(self) -> None:
        conn = self.conn
        if self._close_sent:
            # The peer answered our Close (or failed): the closing handshake is over.
            self._stop_close_timer()
            self.transport.close()
            return
        if conn.close_rcvd is not None and conn.close_sent is not None and conn.parser_exc is None:
            self._queue({"type": "websocket.disconnect", "code": conn.close_rcvd.code,
                         "reason": conn.close_rcvd.reason})
        elif conn.close_sent is not None and conn.parser_exc is not None:  # a protocol error; the core sent Close
            code = conn.close_sent.code
            if code == 1006:  # EOF in the middle of a frame: an abrupt end
                self._queue({"type": "websocket.disconnect", "code": 1006})
            else:
                self._queue({"type": "websocket.disconnect", "code": code, "reason": conn.close_sent.reason})
        self._close_sent = True
        self.transport.close()

    def eof_received(self) -> bool:
        self.conn.receive_eof()
        return False  # the transport closes; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._stop_close_timer()
        self.resume_writing()  # a send waiting for the buffer to drain must not wait forever
        self._queue({"type": "websocket.disconnect", "code": 1006})  # ignored if an end is queued

    def _stop_close_timer(self) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None

    def shutdown(self) -> None:
        """The server is stopping (uvicorn calls this on every connection): Close 1012."""
        if self._accepted and not self._close_sent and self.conn.state is OPEN:
            self.conn.send_close(1012)
            self._write_pending()
            self._queue({"type": "websocket.disconnect", "code": 1012})
        self._close_sent = True
        self.transport.close()

    # ------------------------------------------------------------------ delivery
    def _queue(self, message: dict[str, Any]) -> None:
        if self._ended:
            return
        if message["type"] == "websocket.disconnect":
            self._ended = True
        if self._pending is None:
            self._pending = collections.deque()
        self._pending.append(message)
        if len(self._pending) >= _PAUSE_AT and not self._reading_paused and not self.transport.is_closing():
            self._reading_paused = True
            self.transport.pause_reading()
        if self._channel is not None and self._task is None:
            self._start_delivery()

    def _start_delivery(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._deliver())
        self._tasks.add(self._task)
        self._task.add_done_callback(self._tasks.discard)

    async def _deliver(self) -> None:
        pending = self._pending
        try:
            while pending:
                message = pending.popleft()
                if not pending and self._reading_paused:
                    self._reading_paused = False
                    if not self.transport.is_closing():
                        self.transport.resume_reading()
                if await self._handle(self._runtime, self._channel, message):
                    return
        finally:
            self._task = None
            if not pending:
                self._pending = None
