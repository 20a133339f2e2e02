"""The admin listener: a second HTTP listener (127.0.0.1 and a free port by default) that serves
the admin API (``/__duro/admin/<operation>``, ``admin.py``), the live tail
(``/__duro/admin/tail``, ``observe.py``), Prometheus metrics (``/metrics``) and the dashboard
(``/``: plain HTML and JavaScript from ``dashboard/``, no build step, nothing fetched from
elsewhere).

Everything but the dashboard's static files needs ``authorization: Bearer <token>`` (the token in
``DATA/admin.token``, 0600); the page itself holds no data and asks for the token, which it keeps
in the tab's sessionStorage and sends as that header (never a cookie: another site cannot make
the browser send it). The listener's address is written to ``DATA/admin.url`` (0600) once it
listens, so ``duro objects --server`` and ``duro tail`` find it; both files go at shutdown.

It must never serve the project's code or its assets, and the serving port never serves it.
"""

from __future__ import annotations

import logging
import os
import pathlib
import socket
from typing import Any, Awaitable, Callable

from ..api import Response
from .admin import ADMIN_PREFIX, AdminEndpoint
from .observe import METRICS_CONTENT_TYPE, stream_tail

__all__ = ["AdminFront", "AdminListener", "URL_FILE"]

URL_FILE = "admin.url"
MAX_ADMIN_BODY = 1024 * 1024  # an admin request body (SQL text, arguments); 413 past it
_STATIC = pathlib.Path(__file__).with_name("dashboard")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8"}
# The dashboard loads only its own files; nothing inline, nothing from elsewhere.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")

log = logging.getLogger("duro.admin")
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


def _static_files() -> dict[str, tuple[bytes, str]]:
    files = {}
    for p in sorted(_STATIC.iterdir()):
        if p.suffix in _TYPES:
            files["/" + p.name] = (p.read_bytes(), _TYPES[p.suffix])
    files["/"] = files["/index.html"]
    return files


class AdminFront:
    """ASGI application of the admin listener, around the serving front's :class:`AdminEndpoint`."""

    def __init__(self, admin: AdminEndpoint, stopping: Callable[[], bool]) -> None:
        self.admin = admin
        self.stopping = stopping
        self.static = _static_files()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # no WebSockets here; lifespan is off
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        path, method = scope["path"], scope.get("method")
        body, too_big = await _read_body(receive)
        if too_big:
            await _send(send, Response.json({"error": f"admin request bodies are limited to {MAX_ADMIN_BODY} "
                                                      "bytes"}, status=413))
            return
        if path in self.static and method in ("GET", "HEAD"):
            data, ctype = self.static[path]
            await _send(send, Response(data, headers={"content-type": ctype, "cache-control": "no-store",
                                                      "content-security-policy": _CSP,
                                                      "x-content-type-options": "nosniff"}))
            return
        authorized = self.admin.authorized(scope["headers"])
        if path == ADMIN_PREFIX + "tail" and method == "GET" and authorized:
            await stream_tail(self.admin.app.runtime, scope, receive, send, self.stopping)
            return
        if path == "/metrics":
            if not authorized:
                await _send(send, _forbidden())
            elif method not in ("GET", "HEAD"):
                await _send(send, Response.json({"error": "use GET /metrics"}, status=405))
            else:
                await _send(send, Response(await self.admin.metrics_text(),
                                           headers={"content-type": METRICS_CONTENT_TYPE}))
            return
        if path.startswith(ADMIN_PREFIX):
            await _send(send, await self.admin.handle(scope, body))
            return
        await _send(send, Response.json({"error": f"no such admin path {path[:200]!r}: the dashboard is at /, "
                                                  f"the API under {ADMIN_PREFIX}, metrics at /metrics"},
                                        status=404))


def _forbidden() -> Response:
    return Response.json({"error": "forbidden: a valid admin token is required "
                                   "(authorization: Bearer <contents of DATA/admin.token>)"}, status=403)


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_ADMIN_BODY:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


async def _send(send: Send, resp: Response) -> None:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers.items()
               if k.lower() != "content-length"]
    headers.append((b"content-length", str(len(resp.body)).encode()))
    await send({"type": "http.response.start", "status": resp.status, "headers": headers})
    await send({"type": "http.response.body", "body": resp.body})


class AdminListener:
    """Runs an :class:`AdminFront` on its own socket, on the serving front's event loop."""

    def __init__(self, admin: AdminEndpoint, host: str, port: int) -> None:
        self.admin = admin
        self.host = host
        self.port = port
        self.url: str | None = None
        self._server: Any = None
        self._task: Any = None
        self._url_path: pathlib.Path | None = None

    async def start(self) -> str:
        """Listen (a ConfigError-worthy OSError names the address), write ``DATA/admin.url``,
        return the URL."""
        import asyncio

        import uvicorn

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
        except OSError as e:
            sock.close()
            raise OSError(e.errno, f"cannot listen for the admin listener on {self.host}:{self.port}: "
                                   f"{e.strerror}; choose another --admin-port, or --no-admin") from None
        sock.setblocking(False)
        port = sock.getsockname()[1]
        host = f"[{self.host}]" if family == socket.AF_INET6 else self.host
        self.url = f"http://{host}:{port}"
        app = AdminFront(self.admin, lambda: self._server is not None and self._server.should_exit)
        config = uvicorn.Config(app, loop="none", http="httptools", ws="none", lifespan="off",
                                access_log=False, log_level=None, server_header=False,
                                date_header=False, timeout_keep_alive=15, timeout_graceful_shutdown=2,
                                proxy_headers=False, log_config=None)
        self._server = uvicorn.Server(config)
        self._task = asyncio.ensure_future(self._server._serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the admin listener stopped at start")
            await asyncio.sleep(0.01)
        path = pathlib.Path(self.admin.app.runtime.data_dir) / URL_FILE
        tmp = path.with_name(URL_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, self.url.encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)
        self._url_path = path
        log.info("admin listener on %s: dashboard %s/ (token in %s, or run `duro dashboard`)", self.url,
                 self.url, self.admin.token_file)
        return self.url

    async def stop(self) -> None:
        if self._url_path is not None:
            self._url_path.unlink(missing_ok=True)
            self._url_path = None
        if self._server is None:
            return
        self._server.should_exit = True
        try:
            await self._task
        finally:
            self._server = None
