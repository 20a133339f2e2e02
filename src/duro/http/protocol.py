"""uvicorn's httptools protocol with the front's limits on what a client may hold or send.

uvicorn bounds none of these with httptools: the request target (414), the number and the bytes of
header lines (431), the time to send the headers and the gaps in a body (408), the number of open
connections (503; at the cap the longest-idle connection is closed first). This subclass adds them
at the parser callbacks and on the transport, so a request past a limit is answered and its
connection closed before anything of it reaches the application. An accepted WebSocket upgrade is
handed to duro's own connection (``wsconn.py``). It must never buffer a request itself: httptools
keeps a header line it has not finished, so the bytes of an unfinished head are counted as they
arrive.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .guard import FrontGuard, plain_response

__all__ = ["guarded_protocol"]

_HEAD_SLACK = 1024  # method, version, line ends: a head may exceed target + headers by this much
# The timer wanted by the parser callbacks of the read being parsed (``_want``): not parsing, or
# parsing and no change yet; else None (no timer) or (seconds, callback).
_NOT_PARSING: Any = object()
_UNCHANGED: Any = object()


class _Refused(Exception):
    pass


class GuardedHttpProtocol(HttpToolsProtocol):
    """One HTTP connection, with the limits of ``guard`` (set on the subclass ``guarded_protocol``
    makes)."""

    guard: FrontGuard
    own_websockets = True
    # Slots, not the instance dict: these would grow every connection's dict past its size class.
    __slots__ = ("_refused", "_refusal", "_in_head", "_head_bytes", "_header_count", "_header_bytes", "_timer",
                 "_head_max", "_want")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refused = False
        self._refusal: tuple[int, str] | None = None
        self._in_head = True  # between requests or inside a head: not yet at its body
        self._head_bytes = 0
        self._header_count = 0
        self._header_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._want: Any = _NOT_PARSING
        limits = self.guard.limits
        self._head_max = limits.max_url_bytes + limits.max_header_bytes + _HEAD_SLACK

    # ------------------------------------------------------------------ connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        guard = self.guard
        if not guard.make_room(len(self.connections)):
            # Accept-and-close: the descriptor is returned at once, before storage can miss it.
            self.transport = transport
            self._refused = True
            message = f"too many open connections; the limit is {guard.max_connections}"
            guard.refusal(503, message)
            transport.write(plain_response(503, message, retry_after=guard.limits.overload_retry_after))
            transport.close()
            return
        super().connection_made(transport)
        if guard.connections is None:
            guard.connections = self.connections
        # A connection that never sends a request is held to the header timeout too.
        self._arm(self.guard.limits.header_timeout, self._head_timed_out)
        guard.idle[self] = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard.idle.pop(self, None)
        if self._refused and self.flow is None:
            return  # never registered
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: also tell long responses (``duro tail``) to end, or the
        server would wait its whole grace period for them."""
        self.guard.stopping = True
        super().shutdown()

    def close_idle(self) -> bool:
        """Close this connection to make room for another (the guard's choice: it has no request
        in progress). False if it is already closing."""
        if self._refused or self.transport.is_closing():
            return False
        self._refused = True
        self._disarm()
        self.transport.close()
        return True

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline and not self._refused:
            self.guard.idle[self] = None  # waiting for the next keep-alive request

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self.guard.idle.pop(self, None)
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self._parse(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self._disarm()
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(*self._refusal)
                return
            msg = "Invalid HTTP request received."
            self.guard.refusal(400, msg)  # once per burst: garbage must not flood the log
            self._refused = True
            self._disarm()
            self.send_400_response(msg)
            return
        if self._in_head and self._head_bytes > self._head_max:
            # httptools holds an unfinished header line itself: stop it growing. (A target past
            # its limit was refused in on_url, so the excess is in the headers.)
            limit = self.guard.limits.max_header_bytes
            self._refuse(431, f"the request headers are larger than the limit of {limit} bytes")

    def _parse(self, data: bytes) -> None:
        """Feed ``data`` to the parser. The timers its callbacks arm and cancel take effect once,
        when it has parsed the whole read: a request whose head (and body) came in one read arms
        no timer at all, rather than a header timer, then a body timer, each cancelled at once."""
        self._want = _UNCHANGED
        try:
            self.parser.feed_data(data)
        finally:
            want, self._want = self._want, _NOT_PARSING
            if want is None:
                self._disarm()
            elif want is not _UNCHANGED:
                self._arm(*want)

    def _timing(self) -> bool:
        """Whether a timer is armed (or will be, once the read being parsed is done)."""
        want = self._want
        if want is _NOT_PARSING or want is _UNCHANGED:
            return self._timer is not None
        return want is not None

    # ------------------------------------------------------------------ parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._header_count = 0
        self._header_bytes = 0
        if not self._timing():
            self._arm(self.guard.limits.header_timeout, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        limit = self.guard.limits.max_url_bytes
        if len(self.url) > limit:
            self._refusal = (414, f"the request target is longer than the limit of {limit} bytes")
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        limits = self.guard.limits
        self._header_count += 1
        self._header_bytes += len(name) + len(value) + 4
        if self._header_count > limits.max_header_count:
            self._refusal = (431, f"the request has more than {limits.max_header_count} header lines, the limit")
            raise _Refused
        if self._header_bytes > limits.max_header_bytes:
            self._refusal = (431, f"the request headers are larger than the limit of {limits.max_header_bytes} bytes")
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._disarm()
        super().on_headers_complete()
        if not self.parser.should_upgrade():
            self._arm(self.guard.limits.body_timeout, self._body_timed_out)

    def on_body(self, body: bytes) -> None:
        if self._timing():
            self._arm(self.guard.limits.body_timeout, self._body_timed_out)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head = True
        super().on_message_complete()

    # ------------------------------------------------------------------ timers and refusals
    def _arm(self, seconds: float, callback: Any) -> None:
        if self._want is not _NOT_PARSING:  # inside a parser callback: decided, applied after it
            self._want = (seconds, callback) if seconds > 0 else None
            return
        self._disarm()
        if seconds > 0:
            self._timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._want is not _NOT_PARSING:
            self._want = None
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        if self._head_bytes == 0 and self.cycle is None:
            # Never sent a byte: nothing to answer (browsers open spare connections).
            self._close_quietly()
            return
        seconds = self.guard.limits.header_timeout
        self._refuse(408, f"the request headers did not arrive within {seconds:g} seconds")

    def _body_timed_out(self) -> None:
        self._timer = None
        seconds = self.guard.limits.body_timeout
        message = f"no byte of the request body arrived for {seconds:g} seconds"
        if self.cycle is not None and self.cycle.response_started:
            self.guard.refusal(408, message)
            self.transport.close()
            return
        self._refuse(408, message)

    def _close_quietly(self) -> None:
        self._refused = True
        self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with ``message`` and close: the request never reaches the application
        (one that is running sees a disconnect)."""
        if self._refused:
            return
        self._refused = True
        self._disarm()
        self.guard.refusal(status, message)
        retry = self.guard.limits.overload_retry_after if status == 503 else None
        if not self.transport.is_closing():
            self.transport.write(plain_response(status, message, retry_after=retry))
            self.transport.close()


    # ------------------------------------------------------------------ WebSocket upgrade
    def handle_websocket_upgrade(self) -> None:
        if not self.own_websockets:
            super().handle_websocket_upgrade()
            return
        from .websocket import adopted_message
        from .wsconn import WebSocketConnection

        self._disarm()
        self.guard.idle.pop(self, None)
        self.connections.discard(self)
        scope = self.scope
        head = [scope["method"].encode(), b" ", self.url, b" HTTP/1.1\r\n"]
        for name, value in scope["headers"]:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"\r\n")
        parsed = httptools.parse_url(self.url)
        raw_path = parsed.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        subprotocols: list[str] = []
        for name, value in scope["headers"]:
            if name == b"sec-websocket-protocol":
                subprotocols += [t.strip() for t in value.decode("latin-1").split(",")]
        ws_scope = {
            "type": "websocket", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
            "scheme": "ws", "server": self.server, "client": self.client, "root_path": self.root_path,
            "path": self.root_path + path, "raw_path": self.root_path.encode("ascii") + raw_path,
            "query_string": parsed.query or b"", "headers": scope["headers"], "subprotocols": subprotocols,
            "state": self.app_state.copy(),
        }
        conn = WebSocketConnection(self.transport, self.server_state, max_size=self.config.ws_max_size,
                                   handle=adopted_message)
        self.transport.set_protocol(conn)
        conn.start(b"".join(head), self.app, ws_scope)


def guarded_protocol(guard: FrontGuard, *, own_websockets: bool = True) -> type[GuardedHttpProtocol]:
    """The protocol class for uvicorn's ``http=``, bound to ``guard``. ``own_websockets``: upgraded
    connections use :class:`~duro.http.wsconn.WebSocketConnection` rather than uvicorn's."""
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"guard": guard, "own_websockets": own_websockets})
