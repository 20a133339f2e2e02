"""Cloudflare's own Python Durable Objects example shape runs unmodified (wrangler.jsonc, `workers`
imports, camelCase namespace methods, RPC methods, row attribute access)."""

import pathlib

import httpx

PROJECT = pathlib.Path(__file__).parent / "projects" / "cf_list"


def test_cloudflare_list_example_runs_unchanged(serve):
    srv = serve(PROJECT)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get("/groceries/add/milk").text == "Message 'milk' added to list 'groceries'"
        c.get("/groceries/add/eggs%20and%20ham")
        c.get("/other/add/x")
        assert c.get("/groceries/show").json() == ["milk", "eggs and ham"]
        assert c.get("/other/show").json() == ["x"]
        assert c.get("/empty/show").json() == []
        assert c.get("/groceries/hello").text == "Hello, World!"
        assert c.get("/").status_code == 400
    srv.restart()
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get("/groceries/show").json() == ["milk", "eggs and ham"]
