"""Code written with Cloudflare's camelCase names, `workers`/`js`/`pyodide.ffi` imports and a
wrangler.toml runs unchanged."""

from duro.testing import LocalApp

from .conftest import PROJECTS


async def test_camel_case_project_runs(tmp_path):
    async with LocalApp(PROJECTS / "cf_camel", tmp_path / "d") as app:
        resp = await app.fetch("/")
        assert resp.status == 200, await resp.text()
        out = await resp.json()
    assert out["kv"] == {"got": {"a": 1, "c": 3}, "listed": {"b": 2}, "rev": ["c"], "deleted": 2, "sync": "yes"}
    sql = out["sql"]
    assert sql["rows"] == [{"id": 1, "name": "x"}, {"id": 2, "name": "y"}]
    assert sql["cols"] == ["id", "name"] and sql["raw"] == [["x"], ["y"]] and sql["n"] == 2
    assert sql["read"] == 2 and sql["size"] is True and sql["txn"] == "inside"
    who = out["who"]
    assert len(who["id"]) == 64 and who["name"] == "one" and who["started"] and who["greeting"] == "hi"
    assert out["unique_name"] is None
    assert out["wipe"] is None


async def test_legacy_js_globals_hello_world(tmp_path):
    # `from js import Response` + `Response.new(...)`, `URL.new(...)`, `Headers.new(...)`.
    async with LocalApp(PROJECTS / "cf_legacy", tmp_path / "d") as app:
        resp = await app.fetch("/greet?name=duro")
        assert await resp.text() == "Hello duro!"
        assert resp.status == 201 and resp.headers.get("x-path") == "/greet"
        assert await (await app.fetch("/")).text() == "Hello World!"


def test_js_response_is_the_sdk_response():
    from duro.compat.project import install_shims
    install_shims()
    import js
    import workers

    assert js.Response is workers.Response and js.Headers.new({"a": "1"}).get("a") == "1"
