"""The ``js`` / ``pyodide`` names real Python Workers code uses (the audit in docs/cloudflare.md):
the ones provided behave as that code expects, every other name fails naming itself and the docs."""

import asyncio
import importlib
import sys

import pytest

from duro.compat import install_shims
from duro.compat import js
from duro.compat import pyodide_ffi
from duro.errors import JsException, SqlError


@pytest.fixture(autouse=True)
def shims():
    install_shims()


def test_object_and_array_helpers():
    assert js.Object.fromEntries([["content-type", "text/html"]]) == {"content-type": "text/html"}
    assert js.Object.entries({"a": 1}) == [["a", 1]]
    assert js.Object.assign({"a": 1}, {"b": 2}) == {"a": 1, "b": 2}
    assert getattr(js.Array, "from")((1, 2)) == [1, 2] == js.Array.from_([1, 2])
    assert getattr(js.Array, "from")([1, 2], lambda x, i: x * 10 + i) == [10, 21]
    assert js.Array.isArray([]) and not js.Array.isArray("x")
    assert js.Math.round(2.5) == 3 and js.Math.max(1, 5, 2) == 5


def test_constructors_spelled_new():
    r = js.Response.new("hi", headers=js.Object.fromEntries([["x-a", "1"]]), status=201)
    assert (r.status, r.headers.get("x-a")) == (201, "1")
    req = js.Request.new("https://example.com/a", method="POST", body="b")
    assert (req.method, req.url) == ("POST", "https://example.com/a")
    assert js.Headers.new({"a": "b"}).get("A") == "b"
    assert js.URL.new("/x?q=1", "https://e.com").searchParams.get("q") == "1"
    assert js.TextDecoder.new().decode(js.TextEncoder.new().encode("é")) == "é"
    assert js.Uint8Array.new(b"ab") == bytearray(b"ab")
    pair = js.WebSocketRequestResponsePair.new("ping", "pong")
    assert (pair.request, pair.response) == ("ping", "pong")
    assert isinstance(js.Error.new("boom"), JsException)


def test_small_globals():
    assert js.decodeURIComponent(js.encodeURIComponent("a b/ü")) == "a b/ü"
    assert js.atob(js.btoa("hello")) == "hello"
    assert len(js.crypto.randomUUID()) == 36
    assert js.undefined is None and pyodide_ffi.jsnull is None
    assert js.globalThis is sys.modules["js"]


async def test_promise_and_timers():
    assert await js.Promise.all([js.Promise.resolve(1), js.Promise.new(lambda res, rej: res(2))]) == [1, 2]
    with pytest.raises(JsException):
        await js.Promise.reject("no")
    fired = asyncio.Event()
    js.setTimeout(fired.set, 1)
    await asyncio.wait_for(fired.wait(), 10)
    js.clearTimeout(js.setTimeout(lambda: pytest.fail("cleared timer fired"), 1))


def test_js_exception_carries_cloudflare_name_and_message():
    e = SqlError("no such table: t: SQLITE_ERROR")
    assert isinstance(e, pyodide_ffi.JsException)
    assert (e.name, e.message) == ("Error", "no such table: t: SQLITE_ERROR")
    from duro.codec import DataCloneError
    assert DataCloneError("x").name == "DataCloneError"


@pytest.mark.parametrize("name", ["HTMLRewriter", "Blob", "FormData", "ReadableStream", "Int16Array", "NoSuchThing"])
def test_other_js_names_fail_naming_the_name_and_the_docs(name):
    with pytest.raises(AttributeError, match=rf"js\.{name} is not available in duro.*docs/cloudflare\.md"):
        getattr(sys.modules["js"], name)
    assert not hasattr(sys.modules["js"], name)  # feature checks keep working
    with pytest.raises(ImportError, match=rf"js\.{name} is not available in duro.*docs/cloudflare\.md"):
        exec(f"from js import {name}", {})


@pytest.mark.parametrize("module, name", [("pyodide.ffi", "register_js_module"), ("pyodide.code", "run_js"),
                                          ("pyodide.http", "open_url"), ("pyodide", "webloop"),
                                          ("workers", "import_from_javascript"), ("workers", "FormData")])
def test_other_pyodide_names_fail_the_same_way(module, name):
    with pytest.raises(ImportError, match=rf"{module}\.{name} is not available in duro.*docs/cloudflare\.md"):
        exec(f"from {module} import {name}", {})


def test_pyodide_package():
    pyodide = importlib.import_module("pyodide")
    assert pyodide.__version__ == "0.28.2"
    assert pyodide.ffi is pyodide_ffi
    assert pyodide.code.eval_code("x = 2\nx * 21") == 42
    assert not pyodide_ffi.IN_BROWSER
    assert callable(pyodide_ffi.run_sync) and pyodide_ffi.can_run_sync() is False
