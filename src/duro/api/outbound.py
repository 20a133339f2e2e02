"""Outbound WebSockets: connections an object or an entrypoint opens to another server, as
Cloudflare's Workers open them.

- ``WebSocket.new(url)`` (``js.WebSocket.new``, JavaScript's ``new WebSocket(url)``): connects in
  the background; listeners get ``open``, then ``message`` events, then ``close`` (or ``error`` and
  a 1006 ``close`` if it never connects). ``send`` before ``open`` is refused, as on Cloudflare.
- ``await fetch(url, headers={"Upgrade": "websocket"})``: connects before it returns; the response
  (status 101) carries the socket in ``web_socket``, which must be ``accept()``-ed before use. A
  server that does not upgrade gives its HTTP response back, with ``web_socket`` None.

The socket is a :class:`~duro.api.websocket.WebSocket` (a :class:`ClientWebSocket`) on a runtime
:class:`~duro.runtime.sockets.SocketChannel`, so sends keep the channel's rules: in order, and a
message sent after a write leaves once the write is durable. While open it pins the object that
opened it (no eviction, no hibernation); incoming events reach that object through its input
gate, one at a time; a reset of the object closes it (1011). The connection is the ``websockets``
library's asyncio client; each socket's read loop is a task of the runtime's supervisor, and
:class:`OutboundSockets` (a runtime service) closes what is still open at shutdown (1001).

It never imports the http layer, and never raises a listener's failure into the read loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import weakref
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit, urlunsplit

from ..core.lifecycle import ActivationState
from ..errors import InvalidInputError, OverloadedError
from ..runtime import current_activation
from ..runtime.sockets import CLOSED, CONNECTING, SocketChannel
from .fetch import FetchResponse, Headers, Request
from .websocket import (
    TEXT_ABRUPT_CLOSE, CloseEvent, ErrorEvent, MessageEvent, WebSocket, WebSocketStateError, dispatch, unpin,
)

if TYPE_CHECKING:
    from ..runtime import Activation, Runtime

__all__ = ["ClientWebSocket", "OpenEvent", "OutboundSockets", "connect", "entry_runtime", "fetch_websocket",
           "sockets_for"]

log = logging.getLogger("duro.websocket")

MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # as for incoming connections at the front
OPEN_TIMEOUT_S = 30.0
SHUTDOWN_GRACE_S = 2.0  # for close handshakes at shutdown, then the read loops are cancelled
TEXT_CONNECT_FAILED = "Failed to establish websocket connection"
TEXT_NO_ACCEPT = "Websockets obtained from the 'new WebSocket()' constructor cannot call accept"
_HANDSHAKE_HEADERS = frozenset({"upgrade", "connection", "host", "content-length", "sec-websocket-key",
                                "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"})

# The runtime of the entrypoint code running in this task (set by App.handle and App.scheduled):
# object code finds its runtime through its activation; entrypoint code has none.
entry_runtime: contextvars.ContextVar["Runtime | None"] = contextvars.ContextVar("duro_entry_runtime", default=None)


class OpenEvent:
    __slots__ = ("type",)

    def __init__(self) -> None:
        self.type = "open"


# ---------------------------------------------------------------------- the owner of the read loops
class OutboundSockets:
    """The outbound sockets of one runtime: their read loops run as the runtime's supervised tasks;
    ``close()`` (the runtime closing) closes every socket still open, 1001."""

    def __init__(self, runtime: "Runtime") -> None:
        self.runtime = runtime
        self._open: dict["ClientWebSocket", "asyncio.Task[None] | None"] = {}

    async def start(self) -> None:
        pass

    def add(self, ws: "ClientWebSocket") -> None:
        self._open.setdefault(ws, None)

    def run(self, ws: "ClientWebSocket", coro: Any) -> None:
        self._open[ws] = self.runtime.tasks.spawn(coro, f"duro-outbound-websocket {ws._channel_id}")

    def forget(self, ws: "ClientWebSocket") -> None:
        self._open.pop(ws, None)

    def statistics(self) -> dict[str, Any]:
        return {"open": len(self._open)}

    async def close(self) -> None:
        for ws in list(self._open):
            ws._shutdown()
        tasks = [t for t in self._open.values() if t is not None and not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_S)
        for t in tasks:
            await self.runtime.tasks.cancel(t)
        for ws in list(self._open):  # sockets that never started a read loop (never accepted)
            await ws._abort()
        self._open.clear()


_registry: "weakref.WeakKeyDictionary[Any, OutboundSockets]" = weakref.WeakKeyDictionary()


def sockets_for(runtime: "Runtime") -> OutboundSockets:
    """The outbound-socket owner of ``runtime``, created and registered as a service on first use."""
    svc = _registry.get(runtime)
    if svc is None:
        svc = _registry[runtime] = OutboundSockets(runtime)
        runtime.add_service(svc)
    return svc


def _context(what: str) -> "tuple[Activation | None, OutboundSockets]":
    act = current_activation()
    runtime = act.runtime if act is not None else entry_runtime.get()
    if runtime is None:
        raise WebSocketStateError(f"{what} needs a running duro app: call it while handling a request, "
                                  "an RPC call, an alarm or a scheduled event")
    return act, sockets_for(runtime)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- the socket
class _ClientTransport:
    """A ``websockets`` client connection as the channel's :class:`SocketTransport`.

    The close handshake runs in a task of its own (``closing``, awaited by the read loop when the
    connection ends): the library waits for the peer's answer inside an async context manager, and
    the channel may stop its flusher mid-close, which must not tear that context apart."""

    __slots__ = ("_conn", "closing")

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.closing: asyncio.Task[None] | None = None

    async def send_text(self, data: str) -> None:
        await self._conn.send(data)

    async def send_bytes(self, data: bytes) -> None:
        await self._conn.send(data)

    async def close(self, code: int, reason: str) -> None:
        if self.closing is None:
            self.closing = asyncio.get_running_loop().create_task(self._conn.close(code, reason))
        await asyncio.shield(self.closing)

    async def wait_closed(self) -> None:
        if self.closing is not None:
            await _settle(self.closing)


class ClientWebSocket(WebSocket):
    """The client end of an outbound connection. ``send``, ``close``, ``ready_state`` and the
    ``attachment`` methods are :class:`WebSocket`'s; listeners may also take ``"open"``."""

    __slots__ = ("_url", "_constructed", "_act", "_svc", "_conn", "_transport", "_subprotocol", "_pin_key")

    def __init__(self, url: str, *, constructed: bool, act: "Activation | None", svc: OutboundSockets) -> None:
        super().__init__(SocketChannel())
        self._url = url
        self._constructed = constructed  # new WebSocket(url), not fetch()
        self._act = act
        self._svc = svc
        self._conn: Any = None
        self._transport: _ClientTransport | None = None
        self._subprotocol = ""
        # An open outbound socket keeps its object in memory, from the moment it is created.
        self._pin_key = f"outbound-websocket:{self._channel_id}"
        if act is not None:
            act.pins.add(self._pin_key)
        svc.add(self)

    @property
    def _channel_id(self) -> int:
        assert self._channel is not None
        return self._channel.id

    # -------------------------------------------------------------- the WebSocket surface
    def accept(self) -> None:
        """Start receiving on a socket from ``fetch()``; a ``new WebSocket()`` one needs no accept."""
        ch = self._server("accept")
        if self._constructed:
            if ch.ready_state == CONNECTING or self._conn is None:
                raise WebSocketStateError(TEXT_NO_ACCEPT)
            return  # already accepted when it opened (Cloudflare allows this no-op)
        if ch.accepted:
            return
        if ch.ready_state == CLOSED:
            raise WebSocketStateError("Can't accept() a WebSocket whose connection has ended.")
        super().accept()
        self._attach(self._conn)
        self._svc.run(self, self._receive(self._conn))

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        ch = self._server("close")
        if self._constructed and self._conn is None and ch.ready_state == CONNECTING:
            # Closed before it connected: the attempt is dropped, no event follows.
            ch.abandon()
            return
        super().close(code, reason)

    def add_event_listener(self, type: str, listener: Callable[..., Any], options: Any = None) -> None:
        """Listen for ``"open"``, ``"message"``, ``"close"`` or ``"error"``."""
        if type == "open":
            if self._listeners is None:
                self._listeners = {}
            self._listeners.setdefault(type, []).append(listener)
            return
        super().add_event_listener(type, listener, options)

    addEventListener = add_event_listener  # noqa: N815

    @property
    def url(self) -> str | None:  # type: ignore[override]
        return self._url if self._constructed else None

    @property
    def protocol(self) -> str:
        return self._subprotocol

    def __repr__(self) -> str:
        return f"<ClientWebSocket {self._channel_id} {self._url} readyState={self.ready_state}>"

    # -------------------------------------------------------------- the read loop
    async def _connect_then_receive(self, url: str, headers: list[tuple[str, str]], protocols: list[str]) -> None:
        ch = self._channel
        assert ch is not None
        try:
            if self._act is not None:
                await self._act.output_gate()  # an outgoing connection waits for earlier writes
            conn = await _open(url, headers, protocols)
        except asyncio.CancelledError:
            self._release()
            raise
        except Exception as e:
            log.info("WebSocket to %s failed to connect: %s", self._url, e)
            ch.abandon()
            await self._deliver(ErrorEvent(e))
            await self._deliver(CloseEvent(1006, TEXT_CONNECT_FAILED, False))
            self._release()
            return
        if ch.ready_state == CLOSED:  # close() was called while connecting
            await _quiet_close(conn, 1000, "")
            self._release()
            return
        self._conn = conn
        self._subprotocol = conn.subprotocol or ""
        WebSocket.accept(self)  # mode, listeners and the reset hook: as a standard socket
        self._attach(conn)
        await self._deliver(OpenEvent())
        await self._receive(conn)

    def _attach(self, conn: Any) -> None:
        assert self._channel is not None
        self._transport = _ClientTransport(conn)
        self._channel.attach(self._transport)

    async def _receive(self, conn: Any) -> None:
        from websockets.exceptions import ConnectionClosed
        ch = self._channel
        assert ch is not None
        error: Exception | None = None
        try:
            try:
                async for message in conn:
                    await self._deliver(MessageEvent(message))
            except ConnectionClosed:
                pass
            except asyncio.CancelledError:
                raise
            except Exception as e:  # pragma: no cover - the library reports failures as ConnectionClosed
                error = e
            ch.ready_state = CLOSED
            rcvd = conn.protocol.close_rcvd
            if error is not None:
                await self._deliver(ErrorEvent(error))
            if rcvd is not None:
                await self._deliver(CloseEvent(int(rcvd.code), rcvd.reason, True))
            else:
                await self._deliver(CloseEvent(1006, TEXT_ABRUPT_CLOSE, False))
        finally:
            if self._transport is not None:
                await self._transport.wait_closed()
            await ch.detach()
            self._release()

    async def _deliver(self, event: Any) -> None:
        """One event to the listeners: through the object's input gate if an object opened the
        socket. A listener's failure is logged by ``dispatch``; the object's, here."""
        act = self._act
        if act is None:
            await dispatch(self, event)
            return
        if act.broken is not None or act.state is ActivationState.CLOSED:
            return  # the instance that opened it is gone; the socket went (or goes) with it

        async def run(instance: Any) -> None:
            await dispatch(self, event)
        try:
            await act.run(run, kind="websocket", label=f"outbound {event.type}")
        except asyncio.CancelledError:
            raise
        except OverloadedError as e:
            log.warning("outbound WebSocket %d: %s; closing it with 1013", self._channel_id, e)
            if self._channel is not None and not self._channel.close_sent:
                self._channel.close(1013, "Durable Object is overloaded", None)
        except Exception as e:
            log.warning("outbound WebSocket %d: %s event not delivered: %s", self._channel_id, event.type, e)

    def _release(self) -> None:
        """The connection is over: unpin the object, let go of listeners, leave the owner."""
        ch = self._channel
        if ch is not None:
            ch.ready_state = CLOSED
            unpin(ch)
        if self._act is not None:
            self._act.pins.discard(self._pin_key)
        self._svc.forget(self)

    # -------------------------------------------------------------- shutdown
    def _shutdown(self) -> None:
        ch = self._channel
        if ch is not None and ch.attached and not ch.close_sent:
            ch.close(1001, "server shutting down", None)

    async def _abort(self) -> None:
        if self._conn is not None:
            await _quiet_close(self._conn, 1001, "server shutting down")
        if self._channel is not None:
            self._channel.abandon()
        self._release()


async def _settle(task: "asyncio.Task[None]") -> None:
    """Wait (bounded) for a close handshake task, then stop it; its failure only means the peer
    is gone."""
    await asyncio.wait({task}, timeout=SHUTDOWN_GRACE_S)
    if not task.done():
        task.cancel()
    for outcome in await asyncio.gather(task, return_exceptions=True):
        if isinstance(outcome, Exception):
            log.debug("closing an outbound WebSocket: %s", outcome)


async def _quiet_close(conn: Any, code: int, reason: str) -> None:
    try:
        await asyncio.wait_for(conn.close(code, reason), SHUTDOWN_GRACE_S)
    except asyncio.CancelledError:
        raise
    except Exception as e:  # the connection is gone already; nothing to tell anyone
        log.debug("closing an outbound WebSocket: %s", e)


async def _open(url: str, headers: list[tuple[str, str]], protocols: list[str]) -> Any:
    from websockets.asyncio.client import connect as ws_connect
    return await ws_connect(url, additional_headers=headers or None, subprotocols=protocols or None,  # type: ignore[arg-type]
                            compression=None, max_size=MAX_MESSAGE_BYTES, open_timeout=OPEN_TIMEOUT_S)


# ---------------------------------------------------------------------- the two ways in
def _protocols(protocols: Any) -> list[str]:
    if protocols is None:
        return []
    items = [protocols] if isinstance(protocols, str) else list(protocols)
    for p in items:
        if not isinstance(p, str) or not p or any(c in p for c in ' \t,;:/\\()<>@[]?={}"'):
            raise InvalidInputError("WebSocket Constructor: The protocol header token is invalid.")
    if len(set(items)) != len(items):
        raise InvalidInputError("WebSocket Constructor: The protocols header cannot have repeating values.")
    return items


def connect(url: Any, protocols: Any = None) -> ClientWebSocket:
    """``new WebSocket(url, protocols)``: a socket that connects in the background."""
    url = str(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        raise InvalidInputError("WebSocket Constructor: The url is invalid.") from None
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise InvalidInputError("WebSocket Constructor: The url scheme must be ws or wss.")
    if parts.fragment:
        raise InvalidInputError("WebSocket Constructor: The url fragment must be empty.")
    subprotocols = _protocols(protocols)
    act, svc = _context("WebSocket.new()")
    ws = ClientWebSocket(url, constructed=True, act=act, svc=svc)
    svc.run(ws, ws._connect_then_receive(url, [], subprotocols))
    return ws


async def fetch_websocket(request: Request) -> FetchResponse:
    """``fetch(url, headers={"Upgrade": "websocket"})``: connect, then answer 101 with the socket
    in ``web_socket`` (to be accepted), or the server's own answer if it did not upgrade."""
    from websockets.exceptions import InvalidStatus
    parts = urlsplit(request.url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None:
        raise InvalidInputError(f"a WebSocket upgrade needs an http(s) or ws(s) URL, not {request.url!r}")
    url = urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HANDSHAKE_HEADERS]
    offered = request.headers.get("sec-websocket-protocol")
    protocols = [p.strip() for p in offered.split(",") if p.strip()] if offered else []
    act, svc = _context("fetch() with Upgrade: websocket")
    if act is not None:
        await act.output_gate()
    try:
        conn = await _open(url, headers, protocols)
    except InvalidStatus as e:
        r = e.response
        return FetchResponse(r.body or b"", status=r.status_code, status_text=r.reason_phrase,
                             headers=Headers(list(r.headers.raw_items())))
    ws = ClientWebSocket(request.url, constructed=False, act=act, svc=svc)
    ws._conn = conn
    ws._subprotocol = conn.subprotocol or ""
    response_headers = Headers(list(conn.response.headers.raw_items())) if conn.response is not None else None
    return FetchResponse(None, status=101, headers=response_headers, web_socket=ws)
