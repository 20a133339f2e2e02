"""WebSockets as objects see them: ``WebSocketPair``, ``WebSocket`` and the ``ctx`` methods of the
hibernation API. Delivering incoming events to objects is the front's (``duro.http.delivery``);
this module gives it a few functions (at the end) and never imports it.

Two ways to accept the server end of a pair:

- ``ctx.accept_websocket(server, tags)`` (hibernatable): events go to the class handlers
  ``websocket_message`` / ``websocket_close`` / ``websocket_error`` (or their camelCase and legacy
  ``on_`` spellings); the socket survives the instance, which may be dropped while it is idle.
- ``server.accept()`` (standard): events go to ``add_event_listener`` listeners; the instance is
  pinned in memory while the socket is open and the socket is closed if the object is reset.

A ``WebSocket`` object is a thin handle on a runtime :class:`~duro.runtime.sockets.SocketChannel`.
Within one instance, a hibernatable socket is always the same Python object (usable as a dict key);
after hibernation the new instance gets new handles, as on Cloudflare.
"""

from __future__ import annotations

import asyncio
import datetime
import inspect
import logging
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .. import codec
from ..errors import DuroError, InvalidInputError
from ..runtime import current_activation
from ..runtime.hibernation import (
    MAX_ATTACHMENT_BYTES,
    MAX_AUTO_RESPONSE_BYTES,
    MAX_EVENT_TIMEOUT_MS,
    TEXT_EVENT_TIMEOUT,
    HibernationRegistry,
    attachment_too_large_text,
    auto_response_too_large_text,
)
from ..runtime.sockets import CLOSED, CLOSING, CONNECTING, HIBERNATABLE, OPEN, STANDARD, SocketChannel

if TYPE_CHECKING:
    from ..runtime import Activation


def _registry(act: "Activation") -> HibernationRegistry:
    """The hibernatable sockets of the runtime hosting ``act`` (a runtime beyond the narrow
    ``ActivationHost`` port: the catalog's)."""
    registry: HibernationRegistry = getattr(act.runtime, "hibernation")
    return registry

__all__ = ["WebSocket", "WebSocketPair", "WebSocketRequestResponsePair", "WebSocketError",
           "WebSocketStateError", "MessageEvent", "CloseEvent", "ErrorEvent", "WebSocketStateMixin",
           "handle_for", "server_channel", "drop_handle", "unpin", "dispatch"]

log = logging.getLogger("duro.websocket")

TEXT_NOT_ACCEPTED = ("You must call one of accept() or state.acceptWebSocket() on this WebSocket before "
                     "sending messages.")
TEXT_SEND_AFTER_CLOSE = "Can't call WebSocket send() after close()."
TEXT_ALREADY_ACCEPTED = "Cannot call `acceptWebSocket()` if the WebSocket was already accepted via `accept()`"
TEXT_ABRUPT_CLOSE = "WebSocket disconnected without sending Close frame."
_MAX_CLOSE_REASON_BYTES = 123
# Close codes an endpoint may put in a close frame (RFC 6455 7.4; 1005, 1006, 1015 are never sent).
_SENDABLE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


class WebSocketError(DuroError):
    """A WebSocket failed on the protocol level (a message over 32 MiB, invalid UTF-8 in a text
    frame, a malformed frame). Passed to ``websocket_error``; the connection is closed with the
    matching code (1009, 1007, 1002). The object and its other sockets are unaffected."""

    def __init__(self, message: str, code: int) -> None:
        self.code = code
        super().__init__(message)


class WebSocketStateError(DuroError, RuntimeError):
    """A WebSocket method was called in the wrong state (send before accept, send after close,
    accept twice). Raised before anything is sent; the socket is unchanged."""


# ---------------------------------------------------------------------- events for listeners
class MessageEvent:
    __slots__ = ("type", "data")

    def __init__(self, data: str | bytes) -> None:
        self.type = "message"
        self.data = data


class CloseEvent:
    __slots__ = ("type", "code", "reason", "was_clean")

    def __init__(self, code: int, reason: str, was_clean: bool) -> None:
        self.type = "close"
        self.code = code
        self.reason = reason
        self.was_clean = was_clean

    @property
    def wasClean(self) -> bool:  # noqa: N802 - JS spelling
        return self.was_clean


class ErrorEvent:
    __slots__ = ("type", "error", "message")

    def __init__(self, error: BaseException) -> None:
        self.type = "error"
        self.error = error
        self.message = str(error)


# ---------------------------------------------------------------------- the socket
class WebSocket:
    """One end of a WebSocket. ``send``, ``close``, ``accept``, attachments and listeners."""

    CONNECTING = READY_STATE_CONNECTING = CONNECTING
    OPEN = READY_STATE_OPEN = OPEN
    CLOSING = READY_STATE_CLOSING = CLOSING
    CLOSED = READY_STATE_CLOSED = CLOSED

    __slots__ = ("_channel", "_peer", "_listeners", "__weakref__")

    def __init__(self, channel: SocketChannel | None = None, peer: "WebSocket | None" = None) -> None:
        self._channel = channel  # None for the client end of a pair
        self._peer = peer
        self._listeners: dict[str, list[Callable[..., Any]]] | None = None

    def _server(self, what: str) -> SocketChannel:
        if self._channel is None:
            raise WebSocketStateError(
                f"{what}() is not available on the client end of a WebSocketPair: return it with "
                "Response(None, status=101, web_socket=client) and use the server end")
        return self._channel

    @classmethod
    def new(cls, url: str, protocols: Any = None) -> "WebSocket":
        """JavaScript's ``new WebSocket(url)`` (``js.WebSocket.new(url)``): an outbound connection
        to another server, opened in the background (see :mod:`duro.api.outbound`)."""
        from .outbound import connect
        return connect(url, protocols)

    # -------------------------------------------------------------- accept
    def accept(self) -> None:
        """Accept as a standard (non-hibernating) socket: events go to the listeners, and the
        object stays in memory while the socket is open."""
        ch = self._server("accept")
        if ch.mode == HIBERNATABLE:
            raise WebSocketStateError("Cannot call accept() on a WebSocket accepted with acceptWebSocket()")
        if ch.mode == STANDARD:
            return
        ch.mode = STANDARD
        ch.listener_socket = self
        act = current_activation()
        if act is not None:
            ch.activation = act
            act.pins.add(_pin(ch))
            ch.reset_hook = _reset_hook(ch)
            act.on_reset.append(ch.reset_hook)

    # -------------------------------------------------------------- output
    def send(self, message: str | bytes | bytearray | memoryview) -> None:
        """Queue a text (``str``) or binary message; it leaves in order, after the writes made
        before it are durable."""
        ch = self._server("send")
        if ch.mode is None:
            raise WebSocketStateError(TEXT_NOT_ACCEPTED)
        if ch.close_sent:
            raise WebSocketStateError(TEXT_SEND_AFTER_CLOSE)
        if isinstance(message, (bytearray, memoryview)):
            message = bytes(message)
        elif not isinstance(message, (str, bytes)):
            raise TypeError(f"WebSocket.send() takes str or bytes, not {type(message).__name__}")
        ch.send(message, current_activation())

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close the connection (code 1000 unless given). A second call does nothing."""
        ch = self._server("close")
        if ch.ready_state == CLOSED:
            return  # the peer is gone (Cloudflare's examples reciprocate in webSocketClose, even for 1006)
        if code is None:
            code = 1000
        if not isinstance(code, int) or not (code in _SENDABLE_CODES or 3000 <= code <= 4999):
            raise InvalidInputError(f"invalid WebSocket close code {code!r}: use 1000, 1001-1003, 1007-1014 "
                                    "or 3000-4999 (1005, 1006 and 1015 cannot be sent)")
        reason = reason or ""
        if len(reason.encode()) > _MAX_CLOSE_REASON_BYTES:
            raise InvalidInputError(f"WebSocket close reason is {len(reason.encode())} bytes; the limit is "
                                    f"{_MAX_CLOSE_REASON_BYTES} bytes of UTF-8")
        if ch.mode is None:
            raise WebSocketStateError("You must call one of accept() or state.acceptWebSocket() on this "
                                      "WebSocket before closing it.")
        ch.close(code, reason, current_activation())

    # -------------------------------------------------------------- attachments
    def serialize_attachment(self, value: Any) -> None:
        """Keep a copy of ``value`` with the socket (it survives hibernation); at most 16 KiB
        encoded. Later changes to ``value`` are not kept unless serialized again."""
        ch = self._server("serializeAttachment")
        data = codec.encode(value)
        if len(data) > MAX_ATTACHMENT_BYTES:
            raise InvalidInputError(attachment_too_large_text(len(data)))
        ch.attachment = data

    def deserialize_attachment(self) -> Any:
        """A fresh copy of the serialized attachment, or ``None``."""
        ch = self._server("deserializeAttachment")
        return None if ch.attachment is None else codec.decode(ch.attachment)

    serializeAttachment = serialize_attachment  # noqa: N815
    deserializeAttachment = deserialize_attachment  # noqa: N815

    # -------------------------------------------------------------- listeners
    def add_event_listener(self, type: str, listener: Callable[..., Any], options: Any = None) -> None:
        """Listen for ``"message"``, ``"close"`` or ``"error"`` (standard sockets only: a
        hibernatable socket's events go to the class handlers)."""
        if type not in ("message", "close", "error"):
            raise ValueError(f"unknown WebSocket event type {type!r}; use 'message', 'close' or 'error'")
        if self._listeners is None:
            self._listeners = {}
        self._listeners.setdefault(type, []).append(listener)

    def remove_event_listener(self, type: str, listener: Callable[..., Any], options: Any = None) -> None:
        if self._listeners and listener in self._listeners.get(type, ()):
            self._listeners[type].remove(listener)

    addEventListener = add_event_listener  # noqa: N815
    removeEventListener = remove_event_listener  # noqa: N815

    # -------------------------------------------------------------- properties
    @property
    def ready_state(self) -> int:
        if self._channel is None:
            return self._peer.ready_state if self._peer is not None else CLOSED
        return self._channel.ready_state

    readyState = ready_state  # noqa: N815

    @property
    def url(self) -> None:
        return None

    @property
    def protocol(self) -> str:
        return ""

    @property
    def extensions(self) -> str:
        return ""

    def __repr__(self) -> str:
        if self._channel is None:
            return "<WebSocket client end>"
        return f"<WebSocket {self._channel.id} {self._channel.mode or 'not accepted'} readyState={self.ready_state}>"


class WebSocketPair:
    """Two connected ends: ``client, server = WebSocketPair()`` (or Cloudflare's
    ``WebSocketPair.new().object_values()``). Return ``client`` in the 101 response; accept and
    use ``server``."""

    __slots__ = ("client", "server")

    def __init__(self) -> None:
        self.server = WebSocket(SocketChannel())
        self.client = WebSocket(None, peer=self.server)

    @classmethod
    def new(cls) -> "WebSocketPair":
        return cls()

    def object_values(self) -> tuple[WebSocket, WebSocket]:
        return (self.client, self.server)

    def __iter__(self) -> Iterator[WebSocket]:
        return iter((self.client, self.server))

    def __getitem__(self, index: int | str) -> WebSocket:
        return (self.client, self.server)[int(index)]

    def __len__(self) -> int:
        return 2


class WebSocketRequestResponsePair:
    """An auto-response: an incoming text message equal to ``request`` is answered with
    ``response`` by the runtime, without waking the object. Each at most 2,048 bytes."""

    __slots__ = ("_request", "_response")

    def __init__(self, request: str, response: str) -> None:
        if not isinstance(request, str) or not isinstance(response, str):
            raise TypeError("WebSocketRequestResponsePair takes two strings")
        for which, text in (("request", request), ("response", response)):
            size = len(text.encode())
            if size > MAX_AUTO_RESPONSE_BYTES:
                raise InvalidInputError(auto_response_too_large_text(which, size))
        self._request = request
        self._response = response

    @classmethod
    def new(cls, request: str, response: str) -> "WebSocketRequestResponsePair":
        """JavaScript's ``new WebSocketRequestResponsePair(request, response)``, as Python Workers
        code spells it."""
        return cls(request, response)

    @property
    def request(self) -> str:
        return self._request

    @property
    def response(self) -> str:
        return self._response

    def get_request(self) -> str:
        return self._request

    def get_response(self) -> str:
        return self._response

    getRequest = get_request  # noqa: N815
    getResponse = get_response  # noqa: N815

    def __repr__(self) -> str:
        return f"WebSocketRequestResponsePair({self._request!r}, {self._response!r})"


# ---------------------------------------------------------------------- ctx methods
def _channel_of(ws: Any, what: str) -> SocketChannel:
    if not isinstance(ws, WebSocket):
        raise TypeError(f"{what}() takes a WebSocket, not {type(ws).__name__}")
    return ws._server(what)


def _handles(act: "Activation") -> dict[int, WebSocket]:
    """Per-instance handles, so that one socket is one Python object for the instance's life.
    Kept on ``ctx``: dropped with the instance (hibernation, eviction, reset); a closed socket's
    handle is removed by :func:`drop_handle`."""
    ctx = getattr(act, "ctx", None)
    cache = getattr(ctx, "_ws_handles", None)
    if cache is None:
        cache = {}
        if ctx is not None:
            ctx._ws_handles = cache
    return cache


def handle_for(act: "Activation", channel: SocketChannel) -> WebSocket:
    cache = _handles(act)
    ws = cache.get(channel.id)
    if ws is None:
        ws = WebSocket(channel)
        cache[channel.id] = ws
    return ws


class WebSocketStateMixin:
    """The WebSocket part of ``ctx`` (mixed into :class:`DurableObjectState`)."""

    _act: "Activation"
    # This instance's handles by channel id (see :func:`handle_for`); created on first use.
    _ws_handles: "dict[int, WebSocket] | None" = None

    def accept_websocket(self, ws: WebSocket, tags: Any = None) -> None:
        """Accept ``ws`` (the server end of a pair) as a hibernatable socket with up to 10 tags."""
        if self._act.facet_depth:  # the front wakes objects by ID; a facet has none of its own
            raise WebSocketStateError("acceptWebSocket() is not available in a facet in duro: accept the "
                                      "socket in the parent object and call the facet from its handlers")
        ch = _channel_of(ws, "acceptWebSocket")
        if ch.mode == STANDARD:
            raise WebSocketStateError(TEXT_ALREADY_ACCEPTED)
        if ch.mode == HIBERNATABLE:
            raise WebSocketStateError("Cannot call `acceptWebSocket()` twice on the same WebSocket")
        if ch.ready_state == CLOSED:
            raise WebSocketStateError("Cannot call `acceptWebSocket()` on a closed WebSocket")
        act = self._act
        act.check_usable()
        _registry(act).accept(act.unique_key, act.id, ch, tags)
        _handles(act)[ch.id] = ws

    def get_websockets(self, tag: str | None = None) -> list[WebSocket]:
        """The hibernatable sockets of this object (only those with ``tag``, if given)."""
        act = self._act
        ent = _registry(act).get(act.unique_key, str(act.id))
        if ent is None:
            return []
        return [handle_for(act, ch) for ch in ent.sockets(tag)]

    def get_tags(self, ws: WebSocket) -> list[str]:
        ch = _channel_of(ws, "getTags")
        if ch.mode != HIBERNATABLE:
            raise WebSocketStateError("getTags() can only be called on a WebSocket accepted with acceptWebSocket()")
        return list(ch.tags)

    def set_websocket_auto_response(self, pair: WebSocketRequestResponsePair | None = None) -> None:
        """Answer ``pair.request`` with ``pair.response`` without waking the object; no argument clears."""
        act = self._act
        if pair is not None and not isinstance(pair, WebSocketRequestResponsePair):
            raise TypeError("setWebSocketAutoResponse() takes a WebSocketRequestResponsePair or nothing")
        ent = _registry(act).entry(act.unique_key, act.id)
        ent.auto_response = None if pair is None else (pair.request, pair.response)

    def get_websocket_auto_response(self) -> WebSocketRequestResponsePair | None:
        act = self._act
        ent = _registry(act).get(act.unique_key, str(act.id))
        if ent is None or ent.auto_response is None:
            return None
        return WebSocketRequestResponsePair(*ent.auto_response)

    def get_websocket_auto_response_timestamp(self, ws: WebSocket) -> datetime.datetime | None:
        """When ``ws`` last received an auto-response (UTC), or ``None``."""
        ch = _channel_of(ws, "getWebSocketAutoResponseTimestamp")
        if ch.auto_response_at is None:
            return None
        return datetime.datetime.fromtimestamp(ch.auto_response_at, tz=datetime.timezone.utc)

    def set_hibernatable_websocket_event_timeout(self, timeout_ms: int | None = None) -> None:
        """Cap the wall time of each hibernatable WebSocket event; 0 or nothing removes the cap."""
        if timeout_ms is not None and (not isinstance(timeout_ms, (int, float)) or timeout_ms < 0):
            raise TypeError("the event timeout must be a non-negative number of milliseconds")
        if timeout_ms is not None and timeout_ms > MAX_EVENT_TIMEOUT_MS:
            raise InvalidInputError(TEXT_EVENT_TIMEOUT)
        act = self._act
        ent = _registry(act).entry(act.unique_key, act.id)
        ent.event_timeout_ms = int(timeout_ms) if timeout_ms else None

    def get_hibernatable_websocket_event_timeout(self) -> int | None:
        act = self._act
        ent = _registry(act).get(act.unique_key, str(act.id))
        return None if ent is None else ent.event_timeout_ms

    acceptWebSocket = accept_websocket  # noqa: N815
    getWebSockets = get_websockets  # noqa: N815
    getTags = get_tags  # noqa: N815
    setWebSocketAutoResponse = set_websocket_auto_response  # noqa: N815
    getWebSocketAutoResponse = get_websocket_auto_response  # noqa: N815
    getWebSocketAutoResponseTimestamp = get_websocket_auto_response_timestamp  # noqa: N815
    setHibernatableWebSocketEventTimeout = set_hibernatable_websocket_event_timeout  # noqa: N815
    getHibernatableWebSocketEventTimeout = get_hibernatable_websocket_event_timeout  # noqa: N815


# ---------------------------------------------------------------------- standard-socket pinning
def _pin(ch: SocketChannel) -> str:
    return f"websocket:{ch.id}"


def _reset_hook(ch: SocketChannel) -> Callable[[Any, BaseException], None]:
    def on_reset(act: Any, error: BaseException) -> None:
        # Standard sockets belong to the instance: a reset closes them.
        if ch.ready_state != CLOSED:
            ch.close(1011, "Durable Object reset", None)
    return on_reset


# ---------------------------------------------------------------------- for the front
# The front (``duro.http.delivery``) moves events between connections and objects; these are the
# few things of this module it needs, so that it never reads a handle's or a state's insides.
def server_channel(ws: Any) -> SocketChannel | None:
    """The runtime channel behind ``ws``, either end of a pair (the client end gives its peer's);
    None if ``ws`` is not a WebSocket or has no server end."""
    if not isinstance(ws, WebSocket):
        return None
    server = ws._peer if ws._channel is None else ws
    return None if server is None else server._channel


def drop_handle(act: "Activation | None", channel: SocketChannel) -> None:
    """The instance of ``act`` may let go of its handle for ``channel`` (the socket is closed and
    its close event was delivered). Creates nothing."""
    handles = getattr(getattr(act, "ctx", None), "_ws_handles", None)
    if handles is not None:
        handles.pop(channel.id, None)


def unpin(channel: SocketChannel) -> None:
    """Undo what ``accept()`` did for a standard socket: the instance is no longer pinned by it,
    a reset no longer closes it, and its listeners are let go."""
    act = channel.activation
    if act is None:
        return
    act.pins.discard(_pin(channel))
    if channel.reset_hook in act.on_reset:
        act.on_reset.remove(channel.reset_hook)
    channel.reset_hook = None
    channel.activation = None
    channel.listener_socket = None


async def dispatch(ws: WebSocket, event: Any) -> None:
    """Call ``ws``'s listeners for ``event`` (a :class:`MessageEvent`, :class:`CloseEvent` or
    :class:`ErrorEvent`), in order; a listener that raises is logged and the others still run."""
    for fn in list((ws._listeners or {}).get(event.type, ())):
        try:
            result = fn(event)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("WebSocket %s listener failed", event.type)
