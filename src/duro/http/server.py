"""The HTTP front: an ASGI application served by uvicorn (httptools parser, uvloop).

Every request runs the project's entrypoint, except those its static assets answer first
(:meth:`duro.api.assets.AssetServer.route`: a matching file when the Worker does not ask to run
first), which never enter Python user code. Malformed HTTP never reaches us (the parser answers
400), nor do requests past the front's limits (``protocol.py``: 408, 414, 431, 503). A request body
over the limit gets 413; bodies past the cap on all bodies in flight get 503. An overloaded object
(its queue full by count, bytes or age) gets 503 with ``Retry-After`` and Cloudflare's text, logged
once per burst; any other exception escaping user code is logged and answered with 500, and the
server keeps serving. WebSocket upgrades are handed to ``websocket_handler``.

The serving port serves the project only: ``/__duro/admin/...`` is a path like any other there.
The admin API, metrics and dashboard are on the admin listener (``adminfront.py``), started and
stopped with the app when an :class:`AdminConfig` enables it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import traceback
from time import perf_counter
from typing import Any, Awaitable, Callable

from ..api import App, Request, Response
from ..runtime.router import PeerGone
from ..runtime.writenote import WriteNote, note_writes
from ..runtime.tasks import stop_task
from ..config_admin import AdminConfig
from .admin import AdminEndpoint
from .adminfront import AdminListener
from .bridge import install_bridges
from .fanout import install_fanout
from .observe import FrontMetrics
from .guard import FrontGuard, FrontLimits, cap_log_lines
from .protocol import guarded_protocol
from .websocket import upgrade_required

__all__ = ["AsgiFront", "serve"]

log = logging.getLogger("duro.http")

_CODES = {code: (str(code),) for code in range(100, 600)}  # label tuples, made once

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _url(scope: Scope) -> str:
    host = None
    for k, v in scope["headers"]:
        if k == b"host":
            host = v.decode("latin-1")
            break
    if host is None:
        server = scope.get("server") or ("localhost", None)
        host = server[0] if server[1] in (None, 80, 443) else f"{server[0]}:{server[1]}"
    qs = scope.get("query_string") or b""
    path = scope.get("raw_path") or scope["path"].encode()
    url = f"{scope.get('scheme', 'http')}://{host}{path.decode('latin-1')}"
    if qs:
        url += "?" + qs.decode("latin-1")
    return url


class AsgiFront:
    """ASGI application around an :class:`App`."""

    def __init__(self, app: App, *, max_body: int | None = None, debug: bool = False,
                 websocket_handler: Callable[..., Awaitable[None]] | None = None,
                 limits: FrontLimits | None = None, admin: AdminConfig | None = None) -> None:
        self.app = app
        install_bridges(app.runtime)  # WebSockets across worker processes or cluster nodes, if any
        self.fanout = install_fanout(app.runtime)  # /metrics and duro tail across them
        limits = limits or FrontLimits()
        self.max_body = limits.max_request_body if max_body is None else max_body
        self.guard = FrontGuard(limits, log)
        self.debug = debug
        self.websocket_handler = websocket_handler
        # The admin API (duro objects --server, duro tail, /metrics, the dashboard), on its own
        # listener; None when the admin config is absent or disabled. With worker processes every
        # worker answers the admin calls forwarded to it, and worker 0 holds the listener.
        self.admin: AdminEndpoint | None = None
        self.admin_listener: AdminListener | None = None
        self.drain_time = 0.0  # for calls forwarded by other workers at a graceful stop (``serve`` sets it)
        if admin is not None and admin.enabled:
            self.admin = AdminEndpoint(app, import_dir=admin.import_dir)
            self.admin.front = self
            if app.runtime.first_worker:
                self.admin_listener = AdminListener(self.admin, admin.host, admin.port)
        if self.fanout is not None:
            self.fanout.front = self
        self.metrics = FrontMetrics()
        self.assets = getattr(app, "assets", None)  # an AssetServer when the project has an assets block
        self.requests = 0
        self.errors = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            tracing = self.app.runtime.events.tracer
            if tracing is None:
                await self._http(scope, receive, send)
            else:
                await self._traced(tracing, scope, receive, send)
        elif kind == "websocket":
            if self.websocket_handler is None:
                await send({"type": "websocket.close", "code": 1011})
                return
            await self.websocket_handler(self, scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _traced(self, tracing: Any, scope: Scope, receive: Receive, send: Send) -> None:
        """A request with OpenTelemetry traces on: a server span around it, the object events it
        causes as children (``runtime/tracing.py``)."""
        started = tracing.start_request(scope)
        status: int | None = None

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._http(scope, receive, sending)
        finally:
            tracing.end_request(started, status)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.app.start()
                    if self.admin is not None and self.admin_listener is not None:
                        self.admin.start()
                        await self.admin_listener.start()
                    # After the runtime raised the open-file limit and sized its database pool.
                    self.guard.set_connection_cap(self.app.runtime.storage_descriptors())
                    log.info("front limits: %d connections, %d bytes of request bodies in flight",
                             self.guard.max_connections, self.guard.limits.max_body_bytes_in_flight)
                except Exception as e:
                    log.error("cannot start: %s", e)
                    if self.admin is not None:
                        self.admin.close()
                    if self.app.runtime.started:
                        await self.app.close()
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    router = self.app.runtime.router
                    wait_served = getattr(router, "wait_served", None)
                    if wait_served is not None:  # calls other workers forwarded here drain as requests do
                        await wait_served(self.drain_time)
                    if self.admin_listener is not None:
                        await self.admin_listener.stop()
                    if self.admin is not None:
                        self.admin.close()
                    await self.app.close()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return

    def build_request(self, scope: Scope, body: bytes) -> Request:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        return Request(_url(scope), method=scope.get("method", "GET"), headers=headers, body=body)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.requests += 1
        t0 = perf_counter()
        guard = self.guard
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                if chunk:
                    size += len(chunk)
                    if size > self.max_body:
                        await self._send(send, Response(
                            f"request body is larger than the limit of {self.max_body} bytes", status=413))
                        return
                    if not guard.reserve_body(len(chunk)):
                        size -= len(chunk)
                        limit = guard.limits.max_body_bytes_in_flight
                        text = f"too many bytes of request bodies in flight; the limit is {limit}"
                        guard.refusal(503, text)
                        await self._send(send, self._unavailable(text))
                        return
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            chunks.clear()
            request = self.build_request(scope, body)
            del body
            head = request.method == "HEAD"
            if self.assets is not None:
                resp = await self.assets.route(request, has_worker=self.app.entrypoint is not None)
                if resp is not None:
                    await self._send(send, resp, head=head)
                    return
            writes = note_writes()
            try:
                resp = await self.run_entrypoint(request, writes)
            except asyncio.CancelledError:
                if guard.stopping:  # the drain time is over: a clear, retryable answer, not a cut connection
                    await self._send(send, self._cut_short(writes.wrote), head=head)
                raise
            await self._send(send, resp, head=head)
        finally:
            guard.release_body(size)
            self.metrics.latency.observe(perf_counter() - t0)

    def _unavailable(self, text: str) -> Response:
        return Response(text, status=503, headers={"retry-after": str(self.guard.limits.overload_retry_after)})

    def _cut_short(self, wrote: bool) -> Response:
        """The answer to a request still running when the server's drain time ended (SIGTERM,
        or a worker retiring for a reload): 503, with ``Retry-After`` only if nothing of it wrote."""
        text = ("The server is shutting down and this request was still running at the end of its drain "
                "time (limits.drain_timeout); it was stopped.")
        if wrote:
            return Response(text + " It may have been partly applied: an object wrote to storage for it. "
                            "It is not safe to retry as is.", status=503, headers={"connection": "close"})
        resp = self._unavailable(text + " Nothing of it was written: retry it.")
        resp.headers.set("connection", "close")
        return resp

    async def run_entrypoint(self, request: Request, writes: "WriteNote | None" = None) -> Response:
        writes = writes or note_writes()
        try:
            return await self.app.handle(request)
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            if getattr(e, "overloaded", False):
                # The refused event never ran. If nothing else of this request wrote, nothing
                # changed: 503 + Retry-After. If an earlier call of it may have written, a retry
                # could apply that twice: still 503 (it is overload), but no Retry-After, and
                # the answer says so.
                self.guard.refusal(503, f"{e} ({request.method} {request.url[:200]})")
                if writes.wrote:
                    return Response(f"{e} This request may have been partly applied before that: an "
                                    "earlier call it made wrote to storage. It is not safe to retry "
                                    "as is.", status=503)
                return self._unavailable(str(e))
            if self.guard.stopping and isinstance(e, PeerGone):
                # The worker that owns an object this request called stopped first (its drain
                # ended before this one's): the stop cut the request short, as at the end of a drain.
                return self._cut_short(writes.wrote)
            self.errors += 1
            log.error("unhandled exception in %s %s:\n%s", request.method, request.url,
                      "".join(traceback.format_exception(e)))
            text = "Internal Server Error"
            if self.debug:
                text += f"\n\n{type(e).__name__}: {e}"
            return Response(text, status=500)

    async def _send(self, send: Send, resp: Response, *, head: bool = False) -> None:
        if resp.status == 101:  # a WebSocket answer to a plain HTTP request
            resp = upgrade_required(resp, self.app.runtime)
        body = resp.body
        if head and not body and "content-length" in resp.headers:
            # A HEAD answer without its body (an asset's, say) keeps the length of the body a GET
            # would get; uvicorn sends no body for HEAD either way.
            headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers.items()]
        elif resp.status in (204, 304) or resp.status < 200:
            # No body and no Content-Length (RFC 9110 8.6): in a 304 a length would describe the
            # cached representation, so ``content-length: 0`` would tell caches it is empty.
            body = b""
            headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers.items()
                       if k.lower() != "content-length" or resp.status == 304]
        else:
            headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers.items()
                       if k.lower() != "content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
        requests = self.metrics.requests.values
        code = _CODES.get(resp.status) or (str(resp.status),)
        requests[code] = requests.get(code, 0) + 1
        await send({"type": "http.response.start", "status": _status(resp), "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _Status(int):
    """A status code that carries its own reason phrase (``Response(status_text=...)``). ASGI has
    no field for the phrase, so the code itself carries it to the status line (``_StatusLines``).
    It hashes apart from the plain int, so the table's lookup misses and ``__missing__`` answers:
    every other response keeps the dict's own C lookup."""

    reason: bytes

    def __hash__(self) -> int:
        return hash((int(self), self.reason))

    def __eq__(self, other: object) -> bool:
        return int(self) == other


def _status(resp: Response) -> int:
    text = resp.status_text
    if not text:
        return resp.status
    code = _Status(resp.status)
    # A reason phrase is latin-1 text without line breaks (RFC 9112); anything else is replaced.
    code.reason = text.replace("\r", " ").replace("\n", " ").encode("latin-1", "replace")
    return code


class _StatusLines(dict):  # type: ignore[type-arg]
    """uvicorn's table of status lines, answering a ``_Status`` with its own phrase."""

    def __missing__(self, code: Any) -> bytes:
        reason = getattr(code, "reason", None)
        if reason is None:
            raise KeyError(code)
        return b"HTTP/1.1 %d %s\r\n" % (int(code), reason)


def _install_status_lines() -> None:
    """Make uvicorn's HTTP/1.1 protocol write a response's own reason phrase. It looks its status
    line up in a module-level table on every response; that table becomes a ``_StatusLines``."""
    from uvicorn.protocols.http import httptools_impl
    if not isinstance(httptools_impl.STATUS_LINE, _StatusLines):
        httptools_impl.STATUS_LINE = _StatusLines(httptools_impl.STATUS_LINE)


REPEAT_WINDOW = 1.0  # seconds: a second SIGINT sooner than this is the same Ctrl-C


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, but one Ctrl-C is one stop request. A second SIGINT forces the exit
        without the application's shutdown (databases closed, journal synced); a Ctrl-C in a
        terminal reaches every process of its group, and ``duro dev``'s reloader passes it on to
        the server too, so the server sees two SIGINTs within milliseconds. Only one that comes
        later than ``REPEAT_WINDOW`` after the first forces the exit."""

        _first_signal = 0.0

        def handle_exit(self, sig: int, frame: Any) -> None:
            now = time.monotonic()
            if self.should_exit and sig == signal.SIGINT and now - self._first_signal < REPEAT_WINDOW:
                return
            if not self.should_exit:
                self._first_signal = now
            super().handle_exit(sig, frame)

    return Server


async def serve(front: Any, *, host: str = "127.0.0.1", port: int = 8787, log_level: str = "info",
                ready: "asyncio.Event | None" = None, ws_max_size: int = 32 * 1024 * 1024,
                ws_compression: bool = False, drain_timeout: float = 30.0,
                on_started: Callable[[], None] | None = None, sock: Any = None,
                on_server: Callable[[Any], None] | None = None) -> None:
    """Serve ``front`` (an :class:`AsgiFront`, or a wrapper with its ``guard``) until cancelled or
    signalled (SIGINT/SIGTERM stop it gracefully: requests in flight get ``drain_timeout`` seconds).
    Connections get the guard's limits. ``on_started`` is called once it serves, after uvicorn
    set its signal handlers (``duro serve`` adds its SIGTERM watch then). ``sock``: a listening
    socket to accept on instead of binding ``host:port`` (a worker process's, shared by all workers).
    ``on_server`` gets the uvicorn server once made (a worker's code reload stops it, ``cli/reload.py``).

    WebSocket permessage-deflate is off by default: its per-connection zlib state (~40 KB) would
    dominate the memory of idle hibernated connections."""
    import uvicorn

    _install_status_lines()
    guard: FrontGuard = front.guard
    if hasattr(front, "drain_time"):
        front.drain_time = drain_timeout
    limits = guard.limits
    # duro's own WebSocket connections (wsconn.py) have no permessage-deflate: with compression
    # on, uvicorn's serve the upgraded sockets.
    config = uvicorn.Config(front, host=host, port=port, loop="none",
                            http=guarded_protocol(guard, own_websockets=not ws_compression),
                            timeout_keep_alive=limits.keepalive_timeout,
                            ws="websockets-sansio", lifespan="on", log_level=log_level, access_log=False,
                            ws_max_size=ws_max_size, ws_ping_interval=None, server_header=False,
                            ws_per_message_deflate=ws_compression,
                            date_header=False, timeout_graceful_shutdown=drain_timeout, proxy_headers=False)
    cap_log_lines(guard.max_log_line)  # after uvicorn.Config: it installs its own handlers
    server = _server_class()(config)
    if on_server is not None:
        on_server(server)
    if ready is not None or on_started is not None:
        async def _watch() -> None:
            while not server.started:
                await asyncio.sleep(0.01)
            if on_started is not None:
                on_started()
            if ready is not None:
                ready.set()
        watcher = asyncio.ensure_future(_watch())
    try:
        await server.serve(sockets=[sock] if sock is not None else None)
    finally:
        if ready is not None or on_started is not None:
            await stop_task(watcher)
