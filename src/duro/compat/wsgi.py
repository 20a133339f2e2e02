"""The ``wsgi`` module of Cloudflare's Python Workers SDK (``from workers import wsgi``): run a WSGI
application (Django, Flask) for one request from a ``fetch`` handler.

``await wsgi.fetch(app, request, env=None)`` builds the PEP 3333 environ from the request (``env``
is in ``environ["env"]``), calls the app and returns its response. As on Cloudflare, the app runs
synchronously: the event loop waits while it runs, as for any synchronous handler. The response
body is collected whole.
"""

from __future__ import annotations

import io
import sys
from typing import Any, Callable, Iterable
from urllib.parse import unquote, urlsplit

from ..api import Response
from ..api.fetch import Headers

__all__ = ["fetch", "request_to_environ"]


def _latin1(text: str) -> str:
    # WSGI strings are "bytes as latin-1"; duro's front decoded the header bytes that way already.
    try:
        text.encode("latin-1")
        return text
    except UnicodeEncodeError:
        return text.encode().decode("latin-1")


def request_to_environ(req: Any, body: bytes, env: Any = None) -> dict[str, Any]:
    parts = urlsplit(req.url)
    scheme = parts.scheme or "http"
    environ: dict[str, Any] = {
        "REQUEST_METHOD": req.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": _latin1(unquote(parts.path or "/")),
        "QUERY_STRING": parts.query,
        "SERVER_NAME": parts.hostname or "localhost",
        "SERVER_PORT": str(parts.port or (443 if scheme == "https" else 80)),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "env": env,
    }
    for name, value in Headers(req.headers).items():
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE" or key == "CONTENT_LENGTH":
            environ[key] = value
            continue
        key = "HTTP_" + key
        environ[key] = f"{environ[key]},{value}" if key in environ else _latin1(value)
    if body and "CONTENT_LENGTH" not in environ:
        environ["CONTENT_LENGTH"] = str(len(body))
    return environ


async def fetch(app: Callable[..., Iterable[bytes]], req: Any, env: Any = None, ctx: Any = None) -> Response:
    """Run the WSGI ``app`` for ``req`` and return its response."""
    body = bytes(await req.bytes()) if hasattr(req, "bytes") else b""
    environ = request_to_environ(req, body, env)
    started: list[Any] = []
    chunks: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, headers]
        return chunks.append  # the legacy write() callable

    result = app(environ, start_response)
    try:
        for chunk in result:
            if chunk:
                chunks.append(bytes(chunk))
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if not started:
        raise RuntimeError("the WSGI application returned without calling start_response")
    status_line, headers = started
    code, _, reason = status_line.partition(" ")
    return Response(b"".join(chunks), status=int(code), status_text=reason,
                    headers=list(headers))
