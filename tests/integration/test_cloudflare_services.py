"""Cloudflare-only bindings in a wrangler file are refused by name when used (an
``UnsupportedBindingError``, which ``hasattr`` reads as absent), and ``workers.wsgi`` runs a WSGI app
for one request, as Cloudflare's examples 02/04/09/10 and 18 use them."""

import pathlib

import pytest

from duro.errors import UnsupportedBindingError
from duro.testing import LocalApp

PROJECT = pathlib.Path(__file__).parent / "projects" / "cf_services"


async def test_unsupported_bindings_fail_naming_the_service(tmp_path):
    async with LocalApp(PROJECT, tmp_path) as app:
        with pytest.raises(UnsupportedBindingError, match=r"env\.CACHE is a Workers KV namespace \(kv_namespaces "
                                                          r"in the wrangler file\), a Cloudflare service duro does not provide"):
            await app.fetch("/kv")
        assert await (await app.fetch("/has")).json() == [False, False, False, False, True]
        with pytest.raises(UnsupportedBindingError, match="the Workers AI binding"):
            app.env.AI
        with pytest.raises(UnsupportedBindingError, match="a D1 database"):
            app.env.DB
        with pytest.raises(AttributeError, match="no attribute 'NOPE'"):
            app.env.NOPE


async def test_wsgi_app_gets_the_request_and_env(tmp_path):
    async with LocalApp(PROJECT, tmp_path) as app:
        r = await app.fetch("/p%20q?x=1", method="POST", body="data", headers={"X-A": "b"})
        assert (r.status, r.status_text) == (201, "Created")
        assert await r.text() == "POST /p q?x=1 data b hi"
        assert r.headers.get_all("set-cookie") == ["a=1", "b=2"]


async def test_storage_calls_happen_when_called(tmp_path):
    async with LocalApp(PROJECT, tmp_path) as app:
        stub = app.env.EAGER.get_by_name("e")
        assert await stub.unawaited() == [1, 2]
        assert await stub.as_tasks() == [2, [None, 3]]
        assert await stub.refused_at_the_call() == "DataCloneError"
