"""Cloudflare's ``asgi`` module: FastAPI and Starlette apps run unchanged with
``asgi.fetch(app, request.js_object, env)`` and ``asgi.websocket(app, request, env)``, in an
entrypoint and in a Durable Object, over the real server with real HTTP and WebSocket clients; and
the ASGI contract's corners (lifespan, errors, null-body statuses) with small raw ASGI apps."""

import asyncio
import logging
import pathlib

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from duro import Request, Response
from duro.compat import asgi
from duro.testing import LocalApp, ServerProcess, wait_for

PROJECT = pathlib.Path(__file__).parent / "projects" / "asgi_apps"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with ServerProcess(PROJECT, tmp_path_factory.mktemp("asgi") / "data") as s:
        yield s


def get(srv, path, **kw):
    return httpx.get(srv.url + path, timeout=10, **kw)


def ws_url(srv, path):
    return srv.url.replace("http://", "ws://") + path


# ---------------------------------------------------------------- HTTP, over the real server
def test_fastapi_in_an_entrypoint_routes_validates_and_answers(srv):
    r = get(srv, "/fastapi/items/5?q=x")
    assert r.status_code == 200 and r.json() == {"item_id": 5, "q": "x"}
    assert get(srv, "/fastapi/items/nope").status_code == 422  # FastAPI's own validation
    r = httpx.post(srv.url + "/fastapi/items", json={"name": "pen", "price": 1.5}, timeout=10)
    assert r.status_code == 201 and r.headers["x-made"] == "yes"
    assert r.json() == {"created": "pen", "price": 1.5}
    r = get(srv, "/fastapi/missing")
    assert r.status_code == 404 and r.json() == {"detail": "no such thing"}
    r = get(srv, "/fastapi/empty")
    assert r.status_code == 204 and r.content == b""


def test_env_reaches_the_app_as_cloudflare_puts_it(srv):
    # req.scope["env"], the asgi.env dependency, and the lifespan's state in scope["state"].
    assert get(srv, "/fastapi/env").json() == {"scope": "hello from env", "dependency": "hello from env",
                                               "state": "state"}


def test_paths_are_percent_decoded_with_the_raw_path_kept(srv):
    assert get(srv, "/fastapi/path/a%20b/c").json() == {"rest": "a b/c", "raw_path": "/fastapi/path/a%20b/c"}


def test_request_body_reaches_the_app_in_chunks(srv):
    r = httpx.post(srv.url + "/fastapi/upload", content=b"x" * 200_000, timeout=10)
    assert r.json() == {"size": 200_000, "chunks": 4}  # request.stream() sees several messages


def test_response_headers_repeat_and_streamed_bodies_arrive_whole(srv):
    r = get(srv, "/fastapi/cookies")
    assert r.headers.get_list("set-cookie") == ["first=1; Path=/; SameSite=lax", "second=2; Path=/; SameSite=lax"]
    r = get(srv, "/fastapi/stream")
    assert r.status_code == 200 and r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.text == "".join(f"part {i}\n" for i in range(5))


def test_background_tasks_run_after_the_response(srv):
    assert get(srv, "/fastapi/background").json() == {"queued": True}
    wait_for(lambda: "background ran" in get(srv, "/fastapi/events").json(), what="the background task")


def test_the_lifespan_runs_around_every_request_as_on_cloudflare(srv):
    before = get(srv, "/fastapi/events").json()
    after = get(srv, "/fastapi/events").json()
    # The second read sees the first read's shutdown and its own startup.
    assert after[len(before):] == ["shutdown", "startup"]


def test_an_app_error_is_starlettes_500(srv):
    r = get(srv, "/fastapi/crash")
    assert r.status_code == 500 and r.text == "Internal Server Error"


def test_starlette_in_an_entrypoint(srv):
    r = httpx.post(srv.url + "/starlette/hello", content=b"body!", timeout=10)
    assert r.status_code == 200 and r.headers["x-framework"] == "starlette"
    assert r.text == "starlette POST /starlette/hello body!"


def test_fastapi_inside_a_durable_object_keeps_its_state(srv):
    for by, total in ((2, 2), (5, 7)):
        r = httpx.post(srv.url + "/object/alpha/add", json={"by": by}, timeout=10)
        assert r.json() == {"name": "alpha", "total": total, "id_name": "alpha"}
    assert get(srv, "/object/alpha/total").json() == {"total": 7, "env": "hello from env"}
    assert get(srv, "/object/beta/total").json()["total"] == 0  # another object, its own storage
    srv.restart()
    assert get(srv, "/object/alpha/total").json()["total"] == 7  # durable


# ---------------------------------------------------------------- WebSockets, over the real server
def test_fastapi_websocket_in_an_entrypoint(srv):
    with connect(ws_url(srv, "/fastapi/ws"), subprotocols=["chat"], open_timeout=10) as ws:
        assert ws.subprotocol == "chat"  # the app's accept(subprotocol=) reaches the handshake
        assert ws.recv(timeout=10) == "greeting: hello from env"
        ws.send("hi")
        assert ws.recv(timeout=10) == "text=hi"
        ws.send(b"\x00\x01")
        assert ws.recv(timeout=10) == b"bytes=\x00\x01"
        ws.send("close")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert ws.close_code == 4001 and ws.close_reason == "asked to close"


def test_a_client_close_reaches_the_app_as_disconnect(srv):
    with connect(ws_url(srv, "/fastapi/ws"), open_timeout=10) as ws:
        ws.recv(timeout=10)
        ws.close(1000, "bye")
    wait_for(lambda: "ws disconnect 1000" in get(srv, "/fastapi/events").json(), what="websocket.disconnect")


def test_an_app_that_closes_before_accepting_refuses_the_handshake(srv):
    with pytest.raises(InvalidStatus) as info:
        connect(ws_url(srv, "/fastapi/ws-refuse"), open_timeout=10)
    assert info.value.response.status_code == 403


def test_starlette_websocket_and_an_app_that_returns_closes_normally(srv):
    with connect(ws_url(srv, "/starlette/ws"), open_timeout=10) as ws:
        ws.send("shout")
        assert ws.recv(timeout=10) == "SHOUT"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert ws.close_code == 1000


def test_fastapi_websocket_inside_a_durable_object(srv):
    with connect(ws_url(srv, "/object/gamma/ws"), open_timeout=10) as ws:
        ws.send("4")
        assert ws.recv(timeout=10) == "gamma total 4"
        ws.send("6")
        assert ws.recv(timeout=10) == "gamma total 10"
    assert get(srv, "/object/gamma/total").json()["total"] == 10


# ---------------------------------------------------------------- the contract's corners, in-process
def raw_app(handler, *, lifespan=True):
    """A minimal ASGI app: ``handler(scope, receive, send)`` for http; lifespan acknowledged."""
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            if not lifespan:
                raise ValueError("can only handle http")  # how Django refuses lifespan
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await handler(scope, receive, send)
    return app


async def answer(scope, receive, send, status=200, body=b"served"):
    await receive()
    await send({"type": "http.response.start", "status": status, "headers": [(b"x-null-body", b"1")]})
    await send({"type": "http.response.body", "body": body})


async def test_an_app_without_lifespan_is_served():
    resp = await asyncio.wait_for(asgi.fetch(raw_app(answer, lifespan=False), Request("http://x/"), {}), 5)
    assert resp.status == 200 and await resp.text() == "served"


async def test_lifespan_startup_failure_fails_the_request():
    async def app(scope, receive, send):
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "boom-startup"})
    with pytest.raises(RuntimeError, match="^boom-startup$"):
        await asyncio.wait_for(asgi.fetch(app, Request("http://x/"), {}), 5)


@pytest.mark.parametrize("status", [204, 205, 304])
async def test_null_body_statuses_drop_the_body(status):
    async def handler(scope, receive, send):
        await answer(scope, receive, send, status=status, body=b"must not be sent")
    resp = await asgi.fetch(raw_app(handler), Request("http://x/"), {})
    assert resp.status == status and resp.headers.get("x-null-body") == "1" and resp.body == b""


async def test_an_error_before_the_response_reaches_the_caller_and_is_logged(caplog):
    async def handler(scope, receive, send):
        await receive()
        raise RuntimeError("crash before response")
    with caplog.at_level(logging.ERROR, logger="asgi"):
        with pytest.raises(RuntimeError, match="^crash before response$"):
            await asgi.fetch(raw_app(handler), Request("http://x/"), {})
    assert any("ASGI request failed" in r.getMessage() for r in caplog.records)


async def test_an_app_that_sends_nothing_is_an_error():
    async def handler(scope, receive, send):
        await receive()
    with pytest.raises(RuntimeError, match="^The application did not generate a response$"):
        await asgi.fetch(raw_app(handler), Request("http://x/"), {})


async def test_a_stream_that_fails_midway_ends_where_it_stopped(caplog):
    async def handler(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"chunk-1", "more_body": True})
        raise RuntimeError("failed mid-stream")
    with caplog.at_level(logging.ERROR, logger="asgi"):
        resp = await asgi.fetch(raw_app(handler), Request("http://x/"), {})
    assert resp.status == 200 and resp.body == b"chunk-1"
    assert any("streaming" in r.getMessage() for r in caplog.records)


async def test_the_scope_is_the_one_cloudflare_builds():
    seen = {}

    async def handler(scope, receive, send):
        seen.update(scope, message=await receive())
        await answer(scope, receive, send)
    req = Request("https://example.com:8443/a%2Fb?x=1", method="PUT", headers={"X-Up": "1"}, body=b"payload")
    await asgi.fetch(raw_app(handler), req.js_object, {"k": "v"})
    assert req.js_object is req
    assert seen["type"] == "http" and seen["asgi"] == {"spec_version": "2.0", "version": "3.0"}
    assert (seen["method"], seen["scheme"], seen["path"], seen["raw_path"]) == ("PUT", "https", "/a/b", b"/a%2Fb")
    assert seen["query_string"] == b"x=1" and seen["server"] == ("example.com", 8443)
    assert (b"x-up", b"1") in seen["headers"] and seen["env"] == {"k": "v"}
    assert seen["message"] == {"type": "http.request", "body": b"payload", "more_body": True}


async def test_import_asgi_resolves_to_duro_in_a_project(tmp_path):
    async with LocalApp(PROJECT, tmp_path / "data") as app:
        import sys
        assert sys.modules["asgi"] is asgi and sys.modules["workers.asgi"] is asgi
        from workers import asgi as from_workers
        assert from_workers is asgi
        resp = await app.fetch("/fastapi/items/1")
        assert isinstance(resp, Response) and await resp.json() == {"item_id": 1, "q": None}
