"""WebSocket connections at the front: the handshake, the read pump and the ASGI transport.

An upgrade request runs the project's entrypoint like any request. A ``101`` response with
``web_socket=client`` accepts the connection; any other response is sent back as the HTTP answer
to the upgrade (ASGI ``websocket.http.response``). After the handshake this coroutine reads frames
and delivers them to the socket's object one at a time, in order (the object's input gate applies;
the delivery itself is :mod:`duro.http.delivery`); auto-responses are answered without waking the
object. Frames the object sends leave through the channel's flusher, after the object's output gate.

Connections belong to the front, not to object instances. Under ``duro serve`` a connection is
adopted after the handshake by duro's own protocol (``wsconn.py``, through the ``duro.adopt`` scope
extension), which feeds ``handle_message`` as frames arrive: a hibernated object's sockets are then
just those protocol objects, with no task. Other ASGI servers (and ``duro.testing``) drive the same
``handle_message`` from the ``receive()`` loop of ``_pump``.

Ends of a connection, and what the object sees:
- the peer sends a Close frame: ``websocket_close(ws, code, reason, True)``;
- the peer vanishes without one: ``websocket_close(ws, 1006, "WebSocket disconnected without sending
  Close frame.", False)``;
- a protocol error (message over the size limit, invalid UTF-8 in a text frame): the peer gets close
  1009 / 1007 / 1002 and the object ``websocket_error(ws, WebSocketError)``;
- the object called ``ws.close()``, or the server is shutting down: no event.
"""

from __future__ import annotations

import logging
from typing import Any

from ..api import Response
from ..api.websocket import TEXT_ABRUPT_CLOSE, WebSocketError
from .bridge import BRIDGED, forward_message
from .delivery import deliver, release, response_channel, try_auto_response, unlist
from ..runtime.sockets import CLOSED, HIBERNATABLE, SocketChannel

__all__ = ["websocket_handler", "upgrade_required", "handle_message", "adopted_message", "disconnected"]

log = logging.getLogger("duro.http")

_PROTOCOL_ERRORS = {1002: "WebSocket protocol error", 1007: "WebSocket received invalid UTF-8 in a text frame",
                    1009: "WebSocket received a message larger than the limit"}


class _AsgiTransport:
    __slots__ = ("_send",)

    def __init__(self, send: Any) -> None:
        self._send = send

    async def send_text(self, data: str) -> None:
        await self._send({"type": "websocket.send", "text": data})

    async def send_bytes(self, data: bytes) -> None:
        await self._send({"type": "websocket.send", "bytes": data})

    async def close(self, code: int, reason: str) -> None:
        await self._send({"type": "websocket.close", "code": code, "reason": reason})


async def websocket_handler(front: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    channel = await _handshake(front, scope, send)
    if channel is None:
        return
    runtime = front.app.runtime
    adopt = (scope.get("extensions") or {}).get("duro.adopt")
    if adopt is not None:
        # duro's own connection (wsconn.py) delivers from now on, through adopted_message(): no
        # task waits in receive() for an idle socket.
        adopt(runtime, channel)
        return
    try:
        await _pump(runtime, channel, receive)
    finally:
        release(runtime, channel)
        await channel.detach()


async def adopted_message(runtime: Any, channel: SocketChannel, message: dict[str, Any]) -> bool:
    """Handle one ASGI message of an adopted connection; True once its end was handled (the
    channel is then released)."""
    if not await handle_message(runtime, channel, message):
        return False
    release(runtime, channel)
    await channel.detach()
    return True


async def _handshake(front: Any, scope: dict[str, Any], send: Any) -> SocketChannel | None:
    request = front.build_request(scope, b"")
    resp = await front.run_entrypoint(request)
    channel = response_channel(resp) if resp.status == 101 else None
    if channel is None:
        if resp.status == 101:
            log.error("%s returned status 101 without web_socket=client; answering 500", request.url)
            resp = Response("Internal Server Error", status=500)
        await _deny(send, resp)
        return None
    if not channel.accepted or channel.attached or channel.ready_state == CLOSED:
        why = "was never accepted (call ctx.accept_websocket(server) or server.accept())" if not channel.accepted \
            else "was already used in another response"
        log.error("WebSocket returned by %s %s; answering 500", request.url, why)
        if not channel.attached:
            release(front.app.runtime, channel)
            channel.abandon()
        await _deny(send, Response("Internal Server Error", status=500))
        return None
    accept: dict[str, Any] = {"type": "websocket.accept"}
    subprotocol = resp.headers.get("sec-websocket-protocol")
    if subprotocol:
        accept["subprotocol"] = subprotocol
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers.items()
             if k.lower() not in ("sec-websocket-protocol", "content-length", "content-type", "upgrade", "connection")]
    if extra:
        accept["headers"] = extra
    try:
        await send(accept)
    except Exception:  # the client left during the handshake
        await _closed_before_open(front.app.runtime, channel)
        return None
    channel.attach(_AsgiTransport(send))
    return channel


async def _closed_before_open(runtime: Any, channel: SocketChannel) -> None:
    unlist(runtime, channel)
    await deliver(runtime, channel, "websocket_close", 1006, TEXT_ABRUPT_CLOSE, False)
    release(runtime, channel)
    await channel.detach()


async def _deny(send: Any, resp: Response) -> None:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers.items()
               if k.lower() != "content-length"]
    try:
        await send({"type": "websocket.http.response.start", "status": resp.status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": resp.body})
    except Exception as e:  # pragma: no cover - the client left
        log.debug("could not send the upgrade refusal: %s", e)


async def _pump(runtime: Any, channel: SocketChannel, receive: Any) -> None:
    while not await handle_message(runtime, channel, await receive()):
        pass


async def handle_message(runtime: Any, channel: SocketChannel, message: dict[str, Any]) -> bool:
    """Deliver one ASGI message of an open connection to its object; True if it was the end."""
    if channel.mode == BRIDGED:  # its object is on another worker
        return forward_message(runtime, channel, message)
    kind = message["type"]
    if kind == "websocket.receive":
        text = message.get("text")
        if text is not None:
            if channel.mode == HIBERNATABLE and try_auto_response(runtime, channel, text):
                return False
            await deliver(runtime, channel, "websocket_message", text)
        else:
            await deliver(runtime, channel, "websocket_message", message.get("bytes") or b"")
        return False
    if kind == "websocket.disconnect":
        await disconnected(runtime, channel, message)
        return True
    return False


async def disconnected(runtime: Any, channel: SocketChannel, message: dict[str, Any]) -> None:
    """The connection ended (``message`` is the ASGI disconnect): tell the object, if it must know."""
    if channel.close_sent:
        return  # the object closed it; it needs no event
    code = int(message.get("code", 1005))
    if "reason" not in message:
        if code == 1012:
            return  # the server is shutting down; the instance goes too
        unlist(runtime, channel)
        await deliver(runtime, channel, "websocket_close", 1006, TEXT_ABRUPT_CLOSE, False)
        return
    reason = message.get("reason") or ""
    unlist(runtime, channel)
    if code in _PROTOCOL_ERRORS:
        text = _PROTOCOL_ERRORS[code] + (f": {reason}" if reason else "")
        await deliver(runtime, channel, "websocket_error", WebSocketError(text, code))
        return
    await deliver(runtime, channel, "websocket_close", code, reason, True)


def upgrade_required(resp: Response, runtime: Any) -> Response:
    """A 101 answer to a plain HTTP request: drop the socket the handler accepted and answer
    426 Upgrade Required."""
    channel = response_channel(resp)
    if channel is not None and not channel.attached:
        release(runtime, channel)
        channel.abandon()
    return Response("Expected Upgrade: websocket", status=426, headers={"upgrade": "websocket"})


