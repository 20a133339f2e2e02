"""``Request``, ``Response`` and ``Headers``: the HTTP values handlers take and return.

Shaped like Cloudflare's Python ``workers`` SDK: ``Response(body, status=, status_text=, headers=,
web_socket=)``, ``Response.json(data)``, ``await request.text() / .json() / .bytes()``. Bodies are
held in memory (bounded by the server's request-size limit).

Both cross RPC as Cloudflare's do (registered with the value codec at the end of this module, as a
plain dict of their parts); storage refuses them, as Cloudflare's does. A WebSocket never crosses.
"""

from __future__ import annotations

import json as _json
from collections.abc import Iterable, Iterator, Mapping  # noqa: F401 - Iterable: in HeadersInit
from typing import Any
from urllib.parse import urlsplit

from .. import codec

__all__ = ["Headers", "Request", "Response", "FetchResponse"]

HeadersInit = "Headers | Mapping[str, str] | Iterable[tuple[str, str]] | None"


class Headers:
    """Case-insensitive HTTP headers keeping order and repeated names."""

    __slots__ = ("_items",)

    def __init__(self, init: Any = None) -> None:
        self._items: list[tuple[str, str]] = []
        if init is None:
            return
        if isinstance(init, Headers):
            self._items = list(init._items)
        elif isinstance(init, Mapping):
            self._items = [(str(k), str(v)) for k, v in init.items()]
        else:
            self._items = [(str(k), str(v)) for k, v in init]

    def get(self, name: str, default: str | None = None) -> str | None:
        n = name.lower()
        values = [v for k, v in self._items if k.lower() == n]
        if not values:
            return default
        return ", ".join(values)

    def get_all(self, name: str) -> list[str]:
        n = name.lower()
        return [v for k, v in self._items if k.lower() == n]

    getAll = get_all  # noqa: N815

    def has(self, name: str) -> bool:
        n = name.lower()
        return any(k.lower() == n for k, _ in self._items)

    def set(self, name: str, value: str) -> None:
        self.delete(name)
        self._items.append((name, str(value)))

    def append(self, name: str, value: str) -> None:
        self._items.append((name, str(value)))

    def delete(self, name: str) -> None:
        n = name.lower()
        self._items = [(k, v) for k, v in self._items if k.lower() != n]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def keys(self) -> list[str]:
        return [k.lower() for k, _ in self._items]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.has(name)

    def __getitem__(self, name: str) -> str:
        v = self.get(name)
        if v is None:
            raise KeyError(name)
        return v

    def __setitem__(self, name: str, value: str) -> None:
        self.set(name, value)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    @classmethod
    def new(cls, init: Any = None) -> "Headers":
        """JavaScript's ``new Headers(init)``, as Python Workers code spells it (``js.Headers``)."""
        return cls(init)


def _to_bytes(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    raise TypeError(f"body must be str, bytes or None, not {type(body).__name__}")


_bytes = bytes  # inside _Body, ``bytes`` names the method


class _Body:
    _body: bytes
    headers: Headers

    async def text(self) -> str:
        return self._body.decode()

    async def bytes(self) -> bytes:
        return self._body

    async def array_buffer(self) -> "_bytes":
        return self._body

    arrayBuffer = array_buffer  # noqa: N815

    async def json(self) -> Any:
        return _json.loads(self._body)

    @property
    def body(self) -> "_bytes":
        return self._body


class Request(_Body):
    """An HTTP request. ``url`` is absolute; ``path`` and ``query`` are parsed from it."""

    __slots__ = ("url", "method", "headers", "_body", "cf", "web_socket")

    url: str
    method: str
    cf: dict[str, Any]
    web_socket: Any  # set by the server for an upgrade request

    def __init__(self, url: "str | Request", method: str | None = None, headers: Any = None,
                 body: Any = None, **_ignored: Any) -> None:
        if isinstance(url, Request):
            src = url
            self.url = src.url
            self.method = method.upper() if method else src.method
            self.headers = Headers(headers if headers is not None else src.headers)
            self._body = _to_bytes(body) if body is not None else src._body
            self.cf = src.cf
            self.web_socket = src.web_socket
            return
        if not isinstance(url, str):
            url = str(url)
        if "://" not in url:
            raise TypeError(f"Request url must be absolute (like 'http://do/path'), not {url!r}")
        self.url = url
        self.method = (method or "GET").upper()
        self.headers = Headers(headers)
        self._body = _to_bytes(body)
        self.cf = {}
        self.web_socket = None

    @property
    def path(self) -> str:
        return urlsplit(self.url).path or "/"

    @property
    def query(self) -> str:
        return urlsplit(self.url).query

    @property
    def js_object(self) -> "Request":
        return self

    def clone(self) -> "Request":
        return Request(self)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url}>"


class Response(_Body):
    """An HTTP response. ``status=101`` with ``web_socket=client`` accepts a WebSocket upgrade."""

    __slots__ = ("status", "status_text", "headers", "_body", "web_socket")

    def __init__(self, body: Any = None, status: int | None = None, status_text: str = "",
                 headers: Any = None, web_socket: Any = None, **init: Any) -> None:
        # Cloudflare JS spelling passes options as a dict: Response(body, {"status": 201}).
        if isinstance(status, Mapping):
            init = {**status, **init}
            status = None
        status = init.pop("status", status)
        headers = init.pop("headers", headers)
        web_socket = init.pop("webSocket", init.pop("web_socket", web_socket))
        status_text = init.pop("statusText", init.pop("status_text", status_text))
        self.status = int(status) if status is not None else 200
        if not (100 <= self.status <= 599):
            raise ValueError(f"Response status must be between 100 and 599, not {self.status}")
        self.status_text = status_text
        self.headers = Headers(headers)
        self.web_socket = web_socket
        if isinstance(body, (dict, list)):
            self._body = _json.dumps(body).encode()
            if "content-type" not in self.headers:
                self.headers.set("content-type", "application/json")
        else:
            self._body = _to_bytes(body)
            if isinstance(body, str) and "content-type" not in self.headers:
                self.headers.set("content-type", "text/plain;charset=UTF-8")

    @classmethod
    def new(cls, body: Any = None, init: Any = None, **kwargs: Any) -> "Response":
        """JavaScript's ``new Response(body, init)``, as Python Workers code spells it
        (``from js import Response; Response.new("hi", headers=...)``)."""
        if init is not None:
            kwargs = {**dict(init), **kwargs}
        return cls(body, **kwargs)

    @property
    def ok(self) -> bool:
        return 200 <= self.status <= 299

    @property
    def webSocket(self) -> Any:  # noqa: N802
        return self.web_socket

    @staticmethod
    def json(data: Any, status: int = 200, headers: Any = None, **kw: Any) -> "Response":  # type: ignore[override]
        h = Headers(headers)
        if "content-type" not in h:
            h.set("content-type", "application/json")
        return Response(_json.dumps(data), status=status, headers=h, **kw)

    from_json = json

    @staticmethod
    def redirect(url: str, status: int = 302) -> "Response":
        return Response(None, status=status, headers={"location": url})

    def __repr__(self) -> str:
        return f"<Response {self.status}>"


# What ``stub.fetch`` returns, as the workers SDK names it. ``json`` is an instance method there.
class FetchResponse(Response):
    __slots__ = ()

    async def json(self) -> Any:  # type: ignore[override]
        return _json.loads(self._body)


def as_fetch_response(resp: Response) -> FetchResponse:
    if isinstance(resp, FetchResponse):
        return resp
    out = FetchResponse.__new__(FetchResponse)
    out.status = resp.status
    out.status_text = resp.status_text
    out.headers = resp.headers
    out._body = resp._body
    out.web_socket = resp.web_socket
    return out


# ---------------------------------------------------------------------- over RPC
# The plain shapes below are what the codec writes; their keys are part of the RPC wire format.
def _no_websocket(value: Any) -> None:
    if value is not None:
        raise codec.DataCloneError('Could not serialize object of type "WebSocket". '
                                   "This type does not support serialization.")


def _request_to_plain(req: Request) -> dict[str, Any]:
    _no_websocket(req.web_socket)
    return {"url": req.url, "method": req.method, "headers": [list(h) for h in req.headers.items()],
            "body": req._body, "cf": req.cf}


def _request_from_plain(plain: dict[str, Any]) -> Request:
    req = Request(plain["url"], method=plain["method"], headers=[tuple(h) for h in plain["headers"]],
                  body=plain["body"])
    req.cf = plain.get("cf") or {}
    return req


def _response_to_plain(resp: Response) -> dict[str, Any]:
    _no_websocket(resp.web_socket)
    return {"status": resp.status, "status_text": resp.status_text,
            "headers": [list(h) for h in resp.headers.items()], "body": resp._body}


def _response_from_plain(plain: dict[str, Any]) -> FetchResponse:
    # Not through __init__: the headers already say what the original constructor added.
    out = FetchResponse.__new__(FetchResponse)
    out.status = plain["status"]
    out.status_text = plain["status_text"]
    out.headers = Headers([tuple(h) for h in plain["headers"]])
    out._body = plain["body"]
    out.web_socket = None
    return out


codec.register(Request, "Request", _request_to_plain, _request_from_plain)
codec.register(Response, "Response", _response_to_plain, _response_from_plain)
