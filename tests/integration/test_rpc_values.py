"""What RPC carries, as Cloudflare's RPC carries it for Python code: Request and Response (headers,
status, body), bytes-like values, datetime, sets and maps, exceptions as values and as errors; and
Cloudflare's refusal text for what cannot be sent. Storage keeps refusing Request/Response."""

import datetime as dt
import pathlib

import httpx
import pytest

from duro import Request, Response
from duro.codec import DataCloneError
from duro.testing import LocalApp, ServerProcess

PROJECT = pathlib.Path(__file__).parent / "projects" / "rpc_values"


@pytest.fixture
async def app(tmp_path):
    async with LocalApp(PROJECT, tmp_path / "data") as a:
        yield a


async def test_request_and_response_cross_rpc_both_ways(app):
    stub = app.env.VALUES.get_by_name("r")
    req = Request("https://example.com/tools/call?x=1", method="POST", headers={"x-in": "42"}, body='{"a": 1}')
    resp = await stub.handle_request(req)
    assert isinstance(resp, Response)
    assert resp.status == 202
    assert await resp.text() == 'POST /tools/call {"a": 1}'
    assert resp.headers.get("x-seen") == "42"
    assert resp.headers.get_all("set-cookie") == ["a=1", "b=2"]  # repeated headers survive
    sent = Response.json({"ok": True}, status=418, headers={"x-r": "1"})
    back = await stub.echo_response(sent)
    assert back is not sent and back.status == 418 and back.headers.get("x-r") == "1"
    assert await back.json() == {"ok": True}  # an instance method on what RPC returns, as stub.fetch's
    assert await stub.describe(req) == "Request" and await stub.describe(sent) == "FetchResponse"


async def test_plain_values_round_trip(app):
    stub = app.env.VALUES.get_by_name("v")
    when = dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc)
    value = {"when": when, "tags": {"a", "b"}, "map": {1: "one", "k": [None, 1.5]}, "blob": b"\x00\xff",
             "nested": [{"deep": frozenset({1})}]}
    assert await stub.identity(value) == value
    assert await stub.identity(bytearray(b"ab")) == b"ab"
    assert await stub.identity(memoryview(b"cd")) == b"cd"
    assert await stub.describe(memoryview(b"cd")) == "bytes"
    assert await stub.now() == dt.datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone.utc)


async def test_exceptions_as_values_and_as_errors(app):
    stub = app.env.VALUES.get_by_name("e")
    quota = app.app.module.QuotaError
    got = await stub.make_exception("over quota")
    assert type(got) is quota and str(got) == "over quota"
    assert type(await stub.identity(KeyError("k"))) is KeyError
    with pytest.raises(quota, match="^too many$") as info:
        await stub.raise_quota("too many")
    assert info.value.remote is True and info.value.retryable is False


async def test_what_cannot_be_sent_is_refused_with_cloudflares_text(app):
    stub = app.env.VALUES.get_by_name("refuse")
    widget = app.app.module.Widget()
    with pytest.raises(DataCloneError, match=r'^Could not serialize object of type "Widget"\. '
                                             r'This type does not support serialization\.$'):
        await stub.identity(widget)  # refused in the caller: nothing delivered
    with pytest.raises(TypeError, match='^Could not serialize object of type "Widget"') as info:
        await stub.give_widget()  # refused in the object, reaches the caller as its error
    assert info.value.remote is True
    with pytest.raises(TypeError, match='^Could not serialize object of type "builtin_function_or_method"'):
        await stub.give_function()
    with pytest.raises(TypeError, match='^Could not serialize object of type "function"'):
        await stub.identity(lambda: 1)


async def test_storage_refuses_request_and_response_but_keeps_exceptions(app):
    stub = app.env.VALUES.get_by_name("store")
    for value in (Request("https://x/"), Response("r")):
        with pytest.raises(TypeError, match=f'^Could not serialize object of type "{type(value).__name__}"') as info:
            await stub.store(value)
        assert info.value.remote is True  # arrived over RPC, refused by storage
    stored = await stub.store({"err": ValueError("kept"), "when": dt.date(2026, 1, 1)})
    assert type(stored["err"]) is ValueError and stored["err"].args == ("kept",)


def test_an_entrypoint_hands_the_request_to_an_object_over_the_real_server(tmp_path):
    with ServerProcess(PROJECT, tmp_path / "data") as srv:
        r = httpx.post(srv.url + "/mcp", content=b"ping", headers={"x-in": "h"}, timeout=10)
    assert r.status_code == 202
    assert r.text == "POST /mcp ping"
    assert r.headers["x-seen"] == "h"
    assert r.headers.get_list("set-cookie") == ["a=1", "b=2"]
