"""``pyodide.ffi.run_sync`` over a real server: synchronous code inside handlers (RPC methods, an
async handler's helper, the entrypoint, a constructor) waits for awaitables on the event loop;
``JsException`` catches duro's errors with Cloudflare's name and message; a stub's ``fetch``
returns a ``FetchResponse``."""

import concurrent.futures
import pathlib

import httpx

from duro.testing import wait_for

PROJECT = pathlib.Path(__file__).parent / "projects" / "cf_run_sync"


def test_run_sync_in_handlers(serve):
    srv = serve(PROJECT)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get("/version").text == "0.28.2"
        assert c.get("/add/a/1").json() == 1           # synchronous RPC method
        assert c.get("/add/a/2").json() == 3
        assert c.get("/add-async/a/4").json() == [7, "tag-4"]  # context variables survive the waits
        assert c.get("/entry-sync/a/5").json() == 12    # the entrypoint's synchronous helper
        assert c.get("/nested/a").json() == 112         # run_sync inside a coroutine run_sync waits for
        r = c.get("/fetch/a")
        assert r.text == "FetchResponse True n=112 can_run_sync=True"
        assert c.get("/failing/a").text == "ValueError: raised while waited for"
    srv.restart()
    with httpx.Client(base_url=srv.url, timeout=30) as c:  # the writes made between waits are durable
        assert c.get("/fetch/a").text == "FetchResponse True n=112 can_run_sync=True"


def test_run_sync_in_an_alarm_handler(serve):
    srv = serve(PROJECT)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        c.get("/arm/c").raise_for_status()
        wait_for(lambda: c.get("/alarm-state/c").json() == "rang", what="the alarm's write")


def test_storage_calls_not_awaited_still_happen(serve):
    srv = serve(PROJECT)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        c.get("/fire-and-forget/d").raise_for_status()
        assert c.get("/forgotten/d").json() == "stored"
        wait_for(lambda: c.get("/alarm-state/d").json() == "rang", what="the alarm set without await")


def test_run_sync_outside_a_handler_says_why(serve):
    srv = serve(PROJECT)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        text = c.get("/own-task/a").text
    assert text.startswith("pyodide.ffi.run_sync() can only wait inside a handler duro runs")
    assert "docs/cloudflare.md" in text


def test_concurrent_first_requests_build_one_instance_while_the_constructor_waits(serve):
    # The constructor suspends in run_sync; the input gate stays locked meanwhile, so the other
    # requests neither see a half-built object nor build a second one.
    srv = serve(PROJECT)
    with httpx.Client(base_url=srv.url, timeout=30) as c, concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: c.get("/slow/x").text, range(6)))
    assert answers == ["built=1 constructions=1"] * 6


def test_js_exception_catches_duro_errors_with_cloudflare_names(serve):
    srv = serve(PROJECT)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get("/sql-error/b").json() == ["Error", "no such table: no_such_table: SQLITE_ERROR"]
        assert c.get("/clone-error/b").json() == [
            "DataCloneError", 'Could not serialize object of type "object". This type does not support serialization.']
