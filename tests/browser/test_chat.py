"""The chat example's page in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright):
two pages in one room see each other's messages, the server restarts under them without losing
anything, and a reloaded page gets the history back."""

import os
import pathlib

import pytest

CHAT = pathlib.Path(__file__).resolve().parents[2] / "examples" / "chat"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                       reason=f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)"),
]


@pytest.fixture
def browser_context(tmp_path):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        # A fresh --user-data-dir (Playwright passes it, with --headless, for a persistent context).
        ctx = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                   headless=True, args=FLAGS)
        ctx.set_default_timeout(15_000)
        try:
            yield ctx
        finally:
            ctx.close()


def wait_connected(page, times=1):
    page.wait_for_function(f"(window.connects || 0) >= {times} && document.body.dataset.connected === 'yes'")


def say(page, text):
    page.fill("#text", text)
    page.press("#text", "Enter")


def messages(page):
    return page.locator("#log li.message .text").all_text_contents()


def wait_message(page, text):
    page.locator("#log li.message .text", has_text=text).first.wait_for()


def test_two_pages_chat_survive_a_restart_and_a_reload(serve, browser_context, tmp_path):
    srv = serve(CHAT)
    ann, bob = browser_context.new_page(), browser_context.new_page()
    ann.goto(f"{srv.url}/?room=garden&name=ann")
    bob.goto(f"{srv.url}/?room=garden&name=bob")
    wait_connected(ann)
    wait_connected(bob)

    say(ann, "hello from ann")
    wait_message(bob, "hello from ann")
    say(bob, "hi ann")
    wait_message(ann, "hi ann")

    srv.restart()  # same port and data directory; both pages reconnect by themselves
    wait_connected(ann, 2)
    wait_connected(bob, 2)
    say(ann, "still here after the restart")
    wait_message(bob, "still here after the restart")

    bob.reload()
    wait_connected(bob)
    wait_message(bob, "still here after the restart")
    assert messages(bob) == ["hello from ann", "hi ann", "still here after the restart"]
    assert messages(ann) == ["hello from ann", "hi ann", "still here after the restart"], \
        "a reconnect replays history without duplicating what the page already shows"
    bob.screenshot(path=str(tmp_path / "chat.png"))
