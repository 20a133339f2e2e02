"""Static assets on the real server, as Cloudflare serves them: files answered without entering
the Worker, ETag / If-None-Match, HEAD, content types, html_handling redirects, the 404 page for
browser navigations, run_worker_first rules, ``env.ASSETS.fetch`` and refused traversal."""

import os
import pathlib
import shutil

import httpx
import pytest

from .net import exchange

PROJECT = pathlib.Path(__file__).parent / "projects" / "assets"
NAVIGATE = {"Sec-Fetch-Mode": "navigate"}


@pytest.fixture
def site(serve, tmp_path):
    """The project copied (so a symlink out of the folder can be added), served, and a client."""
    project = tmp_path / "assets"
    shutil.copytree(PROJECT, project)
    os.symlink(project / "secret.txt", project / "public" / "leak.txt")
    os.symlink(project / "public" / "about.html", project / "public" / "alias.html")  # inside: fine
    srv = serve(project)
    with httpx.Client(base_url=srv.url, timeout=30, follow_redirects=False) as client:
        yield srv, client


def worker_calls(client):
    return client.get("/__calls").json()


def test_files_are_served_without_entering_the_worker(site):
    srv, c = site
    home = c.get("/")
    assert home.status_code == 200 and "<h1>home</h1>" in home.text
    assert home.headers["content-type"] == "text/html; charset=utf-8"
    assert home.headers["cache-control"] == "public, max-age=0, must-revalidate"
    etag = home.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 10
    for path, ctype, body in [("/style.css", "text/css; charset=utf-8", "body { color: red; }\n"),
                              ("/app.js", "text/javascript; charset=utf-8", 'console.log("app");\n'),
                              ("/about", "text/html; charset=utf-8", "<h1>about</h1>\n"),
                              ("/docs/", "text/html; charset=utf-8", "<h1>docs</h1>\n"),
                              ("/caf%C3%A9.txt", "text/plain; charset=utf-8", "café\n"),
                              ("/alias", "text/html; charset=utf-8", "<h1>about</h1>\n")]:
        r = c.get(path)
        assert (r.status_code, r.headers["content-type"], r.text) == (200, ctype, body), path
    logo = c.get("/logo.png")
    assert logo.headers["content-type"] == "image/png" and logo.content.startswith(b"\x89PNG")
    assert worker_calls(c) == []  # none of these entered Python


def test_etag_if_none_match_and_head(site):
    srv, c = site
    first = c.get("/style.css")
    etag = first.headers["etag"]
    for tag in (etag, f"W/{etag}"):
        again = c.get("/style.css", headers={"If-None-Match": tag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag
    assert c.get("/style.css", headers={"If-None-Match": '"other"'}).status_code == 200
    assert c.get("/about", headers={"If-None-Match": etag}).status_code == 200  # another file's tag
    head = c.head("/style.css")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(first.content)) and head.headers["etag"] == etag
    # The ETag follows the content: a changed file gets a new one.
    (pathlib.Path(srv.project) / "public" / "style.css").write_text("body { color: blue; }\n")
    changed = c.get("/style.css", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag and "blue" in changed.text
    assert worker_calls(c) == []


def test_html_handling_redirects_to_the_canonical_path(site):
    srv, c = site
    for path, location in [("/about.html", "/about"), ("/about/", "/about"), ("/docs", "/docs/"),
                           ("/docs/index.html", "/docs/"), ("/index.html", "/"), ("/about.html?x=1", "/about?x=1")]:
        r = c.get(path)
        assert (r.status_code, r.headers.get("location")) == (307, location), path
    assert c.get("/docs", follow_redirects=True).text == "<h1>docs</h1>\n"
    out = exchange(srv.port, b"GET //style.css HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 307") and b"\r\nlocation: /style.css\r\n" in out, out
    assert worker_calls(c) == []


def test_a_miss_runs_the_worker_and_a_navigation_gets_the_404_page(site):
    srv, c = site
    assert c.get("/nothing/here").text == "worker: /nothing/here"
    page = c.get("/nothing/here", headers=NAVIGATE)
    assert (page.status_code, page.text) == (404, "<h1>not found</h1>\n")
    nested = c.get("/blog/missing-post", headers=NAVIGATE)
    assert (nested.status_code, nested.text) == (404, "<h1>blog not found</h1>\n")
    assert worker_calls(c) == ["/nothing/here"]


def test_run_worker_first_rules(site):
    srv, c = site
    # /api/* runs the Worker although public/api/data.json exists...
    assert c.get("/api/data.json").text == "worker: /api/data.json"
    # ... except /api/docs/*, which the assets answer (a miss there is the assets' 404, never the Worker)
    assert c.get("/api/docs/").text == "<h1>api docs</h1>\n"
    assert c.get("/api/docs/missing").status_code == 404
    assert worker_calls(c) == ["/api/data.json"]


def test_methods_other_than_get_and_head_on_an_asset_are_refused(site):
    srv, c = site
    r = c.post("/style.css", content=b"x")
    assert r.status_code == 405 and r.content == b""
    assert c.post("/not-a-file", content=b"x").text == "worker: /not-a-file"
    assert worker_calls(c) == ["/not-a-file"]


def test_env_assets_fetch_from_the_worker(site):
    srv, c = site
    r = c.get("/binding/style.css")
    assert r.status_code == 200 and r.text == "body { color: red; }\n"
    assert r.headers["content-type"] == "text/css; charset=utf-8" and r.headers["etag"]
    # Through the binding the configured not_found_handling applies to every request.
    missing = c.get("/binding/blog/nope")
    assert (missing.status_code, missing.text) == (404, "<h1>blog not found</h1>\n")
    assert c.get("/binding/about.html").headers["location"] == "/about"
    assert c.get("/binding/style.css", headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    # the Worker's own request, passed through unchanged (nothing at /passthrough: the 404 page)
    assert c.get("/passthrough").status_code == 404
    assert worker_calls(c) == ["/binding/style.css", "/binding/blog/nope", "/binding/about.html",
                               "/binding/style.css", "/passthrough"]


def test_traversal_and_symlinks_out_of_the_folder_are_refused(site):
    srv, c = site
    secret = b"this file is outside the assets folder"
    for raw in (b"/../secret.txt", b"/%2e%2e/secret.txt", b"/%2E%2E/secret.txt", b"/..%2fsecret.txt",
                b"/docs/..%2f..%2fsecret.txt", b"/docs/%2e%2e/%2e%2e/wrangler.jsonc", b"/leak.txt",
                b"/%00"):
        out = exchange(srv.port, b"GET " + raw + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 ") and secret not in out and b"compatibility_date" not in out, (raw, out)
    # through the binding as well
    assert secret not in c.get("/binding/leak.txt").content
    # _headers and the like configure the server; they are not assets
    assert c.get("/_headers").text == "worker: /_headers"
