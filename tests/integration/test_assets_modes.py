"""Static-asset routing in each configuration, through the real front in-process: a single-page
application with a Worker (a navigation gets index.html, an API call the Worker), the Worker first
for everything, and a project without a Worker, where the assets answer every request."""

from __future__ import annotations

import json
import pathlib

import httpx
import pytest

from duro.http import AsgiFront
from duro.testing import LocalApp

WORKER = '''
from workers import Response, WorkerEntrypoint

class Default(WorkerEntrypoint):
    async def fetch(self, request):
        if request.url.endswith("/assets-please"):
            return await self.env.ASSETS.fetch(request.url.replace("/assets-please", "/"))
        return Response("worker", headers={"x-from": "worker"})
'''


def make(root: pathlib.Path, assets: dict, entry: str = WORKER) -> pathlib.Path:
    (root / "dist" / "app").mkdir(parents=True)
    (root / "dist" / "index.html").write_text("<div id=app></div>")
    (root / "dist" / "app" / "main.js").write_text("boot()")
    (root / "src").mkdir()
    (root / "src" / "entry.py").write_text(entry)
    (root / "wrangler.jsonc").write_text(json.dumps({
        "name": "spa", "main": "src/entry.py", "compatibility_date": "2025-08-14",
        "assets": {"directory": "./dist", "binding": "ASSETS", **assets}}))
    return root


@pytest.fixture
async def client(request, tmp_path):
    assets, entry = request.param
    local = LocalApp(make(tmp_path / "p", assets, entry), tmp_path / "data")
    async with local:
        transport = httpx.ASGITransport(app=AsgiFront(local.app))
        async with httpx.AsyncClient(transport=transport, base_url="http://site.test") as c:
            yield c


SPA = ({"not_found_handling": "single-page-application"}, WORKER)


@pytest.mark.parametrize("client", [SPA], indirect=True)
async def test_single_page_application_with_a_worker(client):
    nav = await client.get("/some/client/route", headers={"Sec-Fetch-Mode": "navigate"})
    assert (nav.status_code, nav.text) == (200, "<div id=app></div>")
    api = await client.get("/api/items")  # a fetch() from the page, not a navigation
    assert api.headers.get("x-from") == "worker"
    assert (await client.get("/app/main.js")).text == "boot()"
    # env.ASSETS.fetch takes a URL string too
    assert (await client.get("/assets-please")).text == "<div id=app></div>"


@pytest.mark.parametrize("client", [({"run_worker_first": True}, WORKER)], indirect=True)
async def test_run_worker_first_true_sends_everything_to_the_worker(client):
    assert (await client.get("/app/main.js")).text == "worker"
    assert (await client.get("/")).text == "worker"
    assert (await client.get("/assets-please")).text == "<div id=app></div>"  # the Worker asks


NO_WORKER = "# assets only: no entrypoint\n"


@pytest.mark.parametrize("client", [({}, NO_WORKER)], indirect=True)
async def test_without_a_worker_the_assets_answer_everything(client):
    assert (await client.get("/")).text == "<div id=app></div>"
    miss = await client.get("/missing")
    assert (miss.status_code, miss.content) == (404, b"")
    assert (await client.post("/missing")).status_code == 404


@pytest.mark.parametrize("client", [({"not_found_handling": "single-page-application"}, NO_WORKER)], indirect=True)
async def test_without_a_worker_a_spa_gets_index_html_for_every_path(client):
    r = await client.get("/deep/link")
    assert (r.status_code, r.text) == (200, "<div id=app></div>")
