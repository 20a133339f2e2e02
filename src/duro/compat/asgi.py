"""The ``asgi`` module of Cloudflare's Python Workers: run an ASGI application (FastAPI, Starlette)
for one request, from an entrypoint's or a Durable Object's ``fetch``.

- ``await asgi.fetch(app, request, env, ctx=None)`` runs one HTTP request. As on Cloudflare, the
  app's lifespan starts before the request and shuts down after it, ``env`` is in ``scope["env"]``,
  and the response is returned as soon as its last body chunk is sent (the rest of the app, such as
  Starlette background tasks, keeps running as ``wait_until`` work). Response bodies are collected
  whole (duro's ``Response`` holds bytes), so a stream that never ends never answers.
- ``await asgi.websocket(app, request, env=None)`` runs one WebSocket connection on a
  ``WebSocketPair`` whose server end is accepted as a standard socket (inside an object, the object
  stays in memory while it is open). The 101 is answered once the app sends ``websocket.accept``.
- ``asgi.env`` is a FastAPI dependency returning ``request.scope["env"]``.

It never reads a socket: requests come in, and responses go out, as duro ``Request``/``Response``.
Every task it starts has an owner: the lifespan task is awaited (or cancelled) before ``fetch``
returns; the app's task belongs to the object (``ctx.wait_until``), to ``ctx`` when one is passed,
or else to this module, which logs its failure.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any, Awaitable
from urllib.parse import unquote, urlsplit

from ..api import Response
from ..api.fetch import Headers
from ..api.websocket import CLOSED, WebSocketPair
from ..runtime import current_activation
from ..runtime.tasks import stop_task

__all__ = ["ASGI", "fetch", "websocket", "request_to_scope"]

ASGI = {"spec_version": "2.0", "version": "3.0"}
# Statuses whose responses carry no body (Fetch standard "null body status").
NULL_BODY_STATUSES = frozenset({101, 103, 204, 205, 304})
_CHUNK = 64 * 1024  # the request body reaches the app in http.request messages of this size

log = logging.getLogger("asgi")

Message = dict[str, Any]

_background: set["asyncio.Task[Any]"] = set()  # app tasks with no object and no ctx to own them


def _log_failure(task: "asyncio.Task[Any]") -> None:
    _background.discard(task)
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("Unhandled exception in ASGI background task", exc_info=exc)


def _spawn(coro: Awaitable[Any], ctx: Any = None) -> None:
    """Run ``coro`` as work that outlives the response: the object's, ``ctx``'s, or ours."""
    act = current_activation()
    if act is not None:
        act.spawn(coro, name="asgi app")
        return
    task = asyncio.ensure_future(coro)
    wait_until = getattr(ctx, "wait_until", None)
    if callable(wait_until):
        wait_until(task)
    else:
        _background.add(task)
        task.add_done_callback(_log_failure)


def _header_bytes(text: str) -> bytes:
    # duro's front decodes header bytes as latin-1; encoding back gives the bytes that arrived.
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode()


def request_to_scope(req: Any, env: Any, *, websocket: bool = False,
                     state: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ASGI ``http`` (or ``websocket``) scope for ``req``, with ``env`` in ``scope["env"]``."""
    parts = urlsplit(req.url)
    raw_path = parts.path or "/"
    default_port = 443 if parts.scheme in ("https", "wss") else 80
    scope: dict[str, Any] = {
        "type": "websocket" if websocket else "http",
        "asgi": ASGI,
        "http_version": "1.1",
        "method": req.method,
        "scheme": parts.scheme,
        "path": unquote(raw_path),  # ASGI wants it percent-decoded; raw_path keeps the original
        "raw_path": raw_path.encode(),
        "query_string": parts.query.encode(),
        "root_path": "",
        "headers": [(_header_bytes(k.lower()), _header_bytes(v)) for k, v in Headers(req.headers).items()],
        "server": (parts.hostname or "localhost", parts.port or default_port),
        "client": None,
        "env": env,
    }
    if websocket:
        del scope["method"]
        scope["scheme"] = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
        scope["subprotocols"] = [p.strip() for p in (req.headers.get("sec-websocket-protocol") or "").split(",")
                                 if p.strip()]
    if state is not None:
        scope["state"] = dict(state)  # ASGI: a shallow copy of the lifespan state per request
    return scope


async def _body_of(req: Any) -> bytes:
    body = getattr(req, "body", None)
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    if hasattr(req, "bytes"):
        return bytes(await req.bytes())
    return b""


# ---------------------------------------------------------------------- lifespan
class _Lifespan:
    """One startup/shutdown cycle of the app's lifespan protocol. The protocol is optional: an app
    that raises before acknowledging startup (Django, for one) simply has none."""

    def __init__(self, app: Any) -> None:
        loop = asyncio.get_running_loop()
        self.state: dict[str, Any] = {}
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._started: asyncio.Future[bool] = loop.create_future()
        self._stopped: asyncio.Future[None] = loop.create_future()
        self._task = loop.create_task(self._run(app), name="asgi lifespan")

    async def start(self) -> None:
        self._inbox.put_nowait({"type": "lifespan.startup"})
        self.supported = await self._started

    async def shutdown(self) -> None:
        if self.supported:
            self._inbox.put_nowait({"type": "lifespan.shutdown"})
            await self._stopped

    async def close(self) -> None:
        await stop_task(self._task)

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            _settle(self._started, True)
        elif kind == "lifespan.startup.failed":
            _fail(self._started, RuntimeError(message.get("message") or "ASGI lifespan startup failed"))
        elif kind == "lifespan.shutdown.complete":
            _settle(self._stopped, None)
        elif kind == "lifespan.shutdown.failed":
            _fail(self._stopped, RuntimeError(message.get("message") or "ASGI lifespan shutdown failed"))
        else:
            raise RuntimeError(f"Unexpected lifespan event {kind}")

    async def _run(self, app: Any) -> None:
        try:
            await app({"type": "lifespan", "asgi": ASGI, "state": self.state}, self._inbox.get, self._send)
        except asyncio.CancelledError:
            raise
        except Exception:
            if self._started.done():
                log.exception("Exception in ASGI lifespan application")
        finally:
            _settle(self._started, False)  # returned or raised without acknowledging: no lifespan
            _settle(self._stopped, None)


def _settle(fut: "asyncio.Future[Any]", value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(fut: "asyncio.Future[Any]", error: BaseException) -> None:
    if not fut.done():
        fut.set_exception(error)


# ---------------------------------------------------------------------- HTTP
async def fetch(app: Any, req: Any, env: Any, ctx: Any = None) -> Response:
    """Run ``app`` for the HTTP request ``req`` and return its response."""
    log.debug("ASGI request: %s %s", req.method, req.url)
    lifespan = _Lifespan(app)
    try:
        await lifespan.start()
        try:
            resp = await _process_request(app, req, env, ctx, lifespan.state)
        except Exception:
            log.exception("ASGI request failed")
            raise
        await lifespan.shutdown()
    finally:
        await lifespan.close()
    return resp


async def _process_request(app: Any, req: Any, env: Any, ctx: Any, state: dict[str, Any]) -> Response:
    scope = request_to_scope(req, env, state=state)
    body = await _body_of(req)
    inbox: collections.deque[Message] = collections.deque(
        {"type": "http.request", "body": body[i:i + _CHUNK], "more_body": True}
        for i in range(0, len(body), _CHUNK))
    inbox.append({"type": "http.request", "body": b"", "more_body": False})
    result: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
    finished = asyncio.Event()  # the response is complete (or abandoned): receive() says disconnect
    start: Message | None = None
    chunks: list[bytes] = []

    def respond() -> None:
        assert start is not None
        status = start["status"]
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers") or ()]
        content = None if status in NULL_BODY_STATUSES else b"".join(chunks)
        _settle(result, Response(content, status=status, headers=headers))
        finished.set()

    async def receive() -> Message:
        if inbox:
            return inbox.popleft()
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal start
        kind = message["type"]
        if kind == "http.response.start":
            if start is not None:
                raise RuntimeError("http.response.start was sent twice")
            start = message
        elif kind == "http.response.body":
            if start is None:
                raise RuntimeError("http.response.body was sent before http.response.start")
            if result.done():
                return  # the response is complete or nobody waits for it any more
            chunks.append(bytes(message.get("body") or b""))
            if not message.get("more_body", False):
                respond()

    async def run_app() -> None:
        try:
            await app(scope, receive, send)
            if not result.done():
                raise RuntimeError("The application did not generate a response")
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if result.done():
                log.exception("Exception in ASGI application after the response was complete")
            elif start is not None and chunks:
                # A stream that fails midway ends where it stopped, as Cloudflare's does.
                log.exception("Exception in ASGI application while streaming the response")
                respond()
            else:
                result.set_exception(e)
        finally:
            finished.set()

    _spawn(run_app(), ctx)
    try:
        return await result
    finally:
        finished.set()  # the caller gave up (or got its answer): the app sees http.disconnect


# ---------------------------------------------------------------------- WebSocket
async def websocket(app: Any, req: Any, env: Any = None) -> Response:
    """Run ``app`` for the WebSocket upgrade request ``req``: a 101 response carrying the client
    end of a pair, answered when the app accepts (403 if it closes first)."""
    scope = request_to_scope(req, env if env is not None else {}, websocket=True)
    pair = WebSocketPair()
    client, server = pair.client, pair.server
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    inbox.put_nowait({"type": "websocket.connect"})
    first: asyncio.Future[Message] = asyncio.get_running_loop().create_future()  # accept or close
    gone = False

    def disconnected(code: int, reason: str = "") -> None:
        nonlocal gone
        if not gone:
            gone = True
            inbox.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})

    def on_message(event: Any) -> None:
        data = event.data
        inbox.put_nowait({"type": "websocket.receive", "text": data} if isinstance(data, str)
                         else {"type": "websocket.receive", "bytes": bytes(data)})

    server.add_event_listener("message", on_message)
    server.add_event_listener("close", lambda event: disconnected(event.code, event.reason))
    server.add_event_listener("error", lambda event: disconnected(getattr(event.error, "code", 1011)))

    def still_open() -> bool:
        return not gone and server.ready_state != CLOSED

    async def send(message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            if not first.done():
                server.accept()  # here, in the app's task: it may send right after accepting
                _settle(first, message)
        elif kind == "websocket.send":
            if not first.done():
                raise RuntimeError("websocket.send was sent before websocket.accept")
            if gone:
                return
            if message.get("bytes") is not None:
                server.send(message["bytes"])
            elif message.get("text") is not None:
                server.send(message["text"])
        elif kind == "websocket.close":
            if not first.done():
                _settle(first, message)
                return
            if still_open():
                code = message.get("code") or 1000
                server.close(code, message.get("reason") or "")
                disconnected(code)  # no close event follows our own close: tell the app it is over
        else:
            log.warning("ASGI WebSocket message %r is not supported", kind)

    async def run_app() -> None:
        try:
            await app(scope, inbox.get, send)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if not first.done():
                first.set_exception(e)
                return
            log.exception("Exception in ASGI WebSocket application")
            if still_open():
                server.close(1011, "Internal Error")
        else:
            # An app that returns ends its connection, as ASGI servers do.
            _settle(first, {"type": "websocket.close"})
            if still_open():
                server.close(1000, "")

    _spawn(run_app())
    answer = await first
    if answer["type"] == "websocket.close":
        return Response(None, status=403)
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in answer.get("headers") or ()]
    if answer.get("subprotocol"):
        headers.append(("sec-websocket-protocol", answer["subprotocol"]))
    return Response(None, status=101, web_socket=client, headers=headers)


def __getattr__(name: str) -> Any:
    if name == "env":
        # ``def route(env=asgi.env)``: FastAPI is imported only by apps that use it.
        from fastapi import Depends, Request

        async def env(request: Any) -> Any:
            return request.scope["env"]

        # Set as an object, not a string: FastAPI must see the class to inject the request.
        env.__annotations__ = {"request": Request, "return": Any}
        return Depends(env)
    raise AttributeError(f"module 'asgi' has no attribute {name!r}")

