"""The admin dashboard in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright),
against a real ``duro serve`` of a small shop project: the URL ``duro dashboard`` prints opens it,
objects are listed and searched, one object's tables, KV keys and alarm show, the SQL console
reads and refuses to write, a restore and a branch from a bookmark change what the project
serves, the live tail shows a request as it happens, and the open sockets are listed.

With DURO_DASHBOARD_SCREENSHOTS=DIR it saves the screenshots of docs/dashboard.md there."""

import os
import pathlib
import subprocess
import sys

import httpx
import pytest
from websockets.sync.client import connect

SHOP = pathlib.Path(__file__).resolve().parent / "projects" / "shop"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                       reason=f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)"),
]


@pytest.fixture
def page(tmp_path):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            ctx = browser.new_context(viewport={"width": 1280, "height": 760})
            ctx.set_default_timeout(15_000)
            pg = ctx.new_page()
            errors = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            # Refused API calls (400, 403) are part of the test; anything else is not.
            pg.on("console", lambda m: errors.append(m.text) if m.type == "error" and not any(
                f"status of {code}" in m.text for code in (400, 403)) else None)
            yield pg
            assert errors == [], errors  # no script error, no CSP violation
        finally:
            browser.close()


def expect(locator):
    from playwright.sync_api import expect as _expect
    return _expect(locator)


def _shot(page, name, tmp_path):
    folder = pathlib.Path(os.environ.get("DURO_DASHBOARD_SCREENSHOTS") or tmp_path)
    page.screenshot(path=str(folder / f"dashboard-{name}.png"))


def _admin(srv, op, **args):
    r = httpx.post(f"{srv.admin_url}/__duro/admin/{op}", json=args, headers=srv.admin_headers(), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_the_dashboard_in_chromium(serve, page, tmp_path):
    srv = serve(SHOP)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.post("/stock/north?item=apple&qty=3").json() == {"qty": 3}
        assert c.post("/stock/south?item=fig&qty=1").status_code == 200
        north = next(o for o in _admin(srv, "objects")["objects"] if o["name"] == "north")
        apples_only = _admin(srv, "object", namespace=north["namespace"], id=north["id"])["bookmarks"]["last"]
        assert c.post("/stock/north?item=pear&qty=2").json() == {"qty": 2}
        with connect(srv.url.replace("http://", "ws://") + "/ws/north") as ws:
            ws.send("hi")
            assert ws.recv(timeout=30) == "echo hi"

            # The URL `duro dashboard` prints carries the token in its fragment; the page keeps it
            # in sessionStorage and takes it out of the address bar.
            out = subprocess.run([sys.executable, "-m", "duro", "dashboard", "--data", srv.data_dir],
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            url = out.stdout.strip()
            assert url.startswith(srv.admin_url + "/#token=")
            page.goto(url)
            page.wait_for_selector("body[data-ready=yes]")
            assert "token" not in page.url

            names = page.locator("#objects tbody tr td:first-child").all_text_contents()
            assert sorted(names) == ["north", "south"]
            _shot(page, "objects", tmp_path)
            page.fill("#search", "nor")
            page.press("#search", "Enter")
            expect(page.locator("#objects tbody tr")).to_have_count(1)
            assert page.locator("#objects tbody tr td:first-child").all_text_contents() == ["north"]

            page.click("#objects tbody tr")
            page.wait_for_selector("#object:not([hidden])")
            assert page.text_content("#object-title") == "north"
            assert page.locator("#tables tbody tr").first.text_content() == "stock2"
            keys = page.locator("#kv-keys li").all_text_contents()
            assert "last_item" in keys and "count:pear" in keys
            facts = page.text_content("#object-facts")
            assert north["alarm"][:16] in facts  # the pending alarm, to the minute
            assert apples_only in page.text_content("#bookmarks") or "from " in page.text_content("#bookmarks")

            page.click("#tables tbody tr")  # a table's rows, through the console
            expect(page.locator("#sql-result tbody tr")).to_have_count(2)
            assert page.locator("#sql-result tbody tr").all_text_contents() == ["apple3", "pear2"]
            _shot(page, "object", tmp_path)

            page.fill("#sql", "DELETE FROM stock")
            page.click("#sql-form button")
            expect(page.locator("#sql-error")).to_contain_text("the console only reads")
            assert c.get("/stock/north").json() == {"apple": 3, "pear": 2}

            # Restore to the bookmark taken before the pears arrived (the page asks first).
            page.on("dialog", lambda d: d.accept())
            page.fill("#bookmark", apples_only)
            page.click("#restore")
            expect(page.locator("#point-result")).to_contain_text("restored to " + apples_only)
            assert c.get("/stock/north").json() == {"apple": 3}
            page.fill("#bookmark", apples_only)
            page.fill("#branch-name", "north-copy")
            page.click("#branch")
            expect(page.locator("#point-result")).to_contain_text("created north-copy")
            assert c.get("/stock/north-copy").json() == {"apple": 3}
            assert page.text_content("#point-error") == ""

            # The live tail shows a request made while it streams.
            page.click("nav [data-tab=tail]")
            page.click("#tail-start")
            expect(page.locator("#tail-state")).to_contain_text("streaming")
            assert c.post("/stock/south?item=kiwi&qty=4").status_code == 200
            page.locator("#tail tbody td.logs", has_text="added 4 kiwi").wait_for()
            row = page.locator("#tail tbody tr").first.text_content()
            assert "Shop" in row and "south" in row and "rpc add" in row and "ok" in row
            _shot(page, "tail", tmp_path)
            page.click("#tail-stop")

            page.click("nav [data-tab=sockets]")
            page.locator("#sockets tbody td", has_text="shop:north").wait_for()
            assert "1 WebSocket" in page.text_content("#connections")
            _shot(page, "sockets", tmp_path)


def test_the_page_asks_for_the_token_and_refuses_a_wrong_one(serve, page):
    srv = serve(SHOP)
    page.goto(srv.admin_url + "/")
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#token", "not-the-token")
    page.click("#login-form button")
    expect(page.locator("#login-error")).to_contain_text("refused")
    assert page.is_hidden("#app")
    token = srv.admin_headers()["authorization"].split(" ", 1)[1]
    page.fill("#token", token)
    page.click("#login-form button")
    page.wait_for_selector("body[data-ready=yes]")
    assert page.is_visible("#objects")
