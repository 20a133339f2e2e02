"""Outbound WebSockets on the real server: a Durable Object (and the entrypoint) of a `duro serve`
subprocess connects to a real WebSocket server the test runs on 127.0.0.1 (the `websockets`
library's), with `js.WebSocket.new(url)` and with `fetch(url, headers={"Upgrade": "websocket"})`.

What the object records (in its SQLite, from inside each event) is read back over HTTP.
"""

import asyncio
import json
import pathlib
import threading
import time

import httpx
import pytest
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed

from duro.testing import ServerProcess, free_port, wait_for

PROJECT = pathlib.Path(__file__).resolve().parent / "projects" / "outbound"
IDLE_TIMEOUT = 0.5


class Peer:
    """A WebSocket server on 127.0.0.1 in a thread with its own loop. It answers "echo:<msg>",
    closes with 4000 "bye" on "close-me", refuses the upgrade on /deny, and records what it got."""

    def __init__(self):
        self.received = []
        self.closes = []  # (code, reason) of the close frames clients sent
        self.conns = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        async def start():
            return await ws_serve(self._handler, "127.0.0.1", 0, process_request=self._process)
        self.server = self._call(start())
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc):
        async def stop():
            self.server.close()
            await self.server.wait_closed()
        self._call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def url(self, path="/", scheme="ws"):
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def _process(self, conn, request):
        if request.path == "/deny":
            return conn.respond(403, "no sockets here\n")
        return None

    async def _handler(self, conn):
        self.conns.append(conn)
        try:
            async for msg in conn:
                self.received.append(msg)
                if msg == "close-me":
                    await conn.close(4000, "bye")
                else:
                    await conn.send(f"echo:{msg}")
        except ConnectionClosed:
            pass
        rcvd = conn.protocol.close_rcvd
        self.closes.append((rcvd.code, rcvd.reason) if rcvd is not None else None)

    def push(self, text):
        wait_for(lambda: self.conns, what="a client connection")
        self._call(self.conns[-1].send(text))


@pytest.fixture
def peer():
    with Peer() as p:
        yield p


@pytest.fixture
def srv(tmp_path):
    with ServerProcess(PROJECT, tmp_path / "data", args=["--durability", "os", "--idle-timeout", str(IDLE_TIMEOUT)],
                       log_path=tmp_path / "server.log") as s:
        yield s


def get(srv, path, **params):
    r = httpx.get(srv.url + path, params=params, timeout=15)
    assert r.status_code == 200, r.text
    return r


def events(srv, name):
    return get(srv, f"/c/{name}/events").json()


def has(srv, name, kind, data=None):
    return any(k == kind and (data is None or d == data) for k, d in events(srv, name))


def test_new_websocket_from_an_object_opens_receives_sends_and_closes(srv, peer):
    assert get(srv, "/c/a/open", url=peer.url()).json() == 0  # CONNECTING
    wait_for(lambda: has(srv, "a", "open"), what="the open event")
    peer.push("hello")
    wait_for(lambda: has(srv, "a", "message", "hello"), what="a message from the server")
    get(srv, "/c/a/send", text="ping")
    wait_for(lambda: has(srv, "a", "message", "echo:ping"), what="the echo")
    assert peer.received == ["ping"]
    assert get(srv, "/c/a/state").json()["ready_state"] == 1  # OPEN
    get(srv, "/c/a/close", code=1000, reason="done")
    wait_for(lambda: has(srv, "a", "close"), what="the close event")
    assert peer.closes == [(1000, "done")]
    assert [d for k, d in events(srv, "a") if k == "close"] == [json.dumps([1000, "done", True])]
    assert get(srv, "/c/a/state").json()["ready_state"] == 3  # CLOSED
    assert [k for k, _ in events(srv, "a")] == ["open", "message", "message", "close"]


def test_an_open_socket_keeps_its_object_in_memory_until_it_closes(srv, peer):
    get(srv, "/c/b/open", url=peer.url())
    wait_for(lambda: has(srv, "b", "open"), what="the open event")
    instance = get(srv, "/c/b/state").json()["instance"]
    # Several idle timeouts pass with no request: the socket keeps the instance (and its socket).
    time.sleep(IDLE_TIMEOUT * 5 + 1.0)
    peer.push("still here")
    wait_for(lambda: has(srv, "b", "message", "still here"), what="a message after the idle timeout")
    assert get(srv, "/c/b/state").json() == {"instance": instance, "ready_state": 1}
    # Once closed, nothing holds it: it is evicted when idle, and the next call builds a new one.
    get(srv, "/c/b/close")
    wait_for(lambda: has(srv, "b", "close"), what="the close event")
    wait_for(lambda: get(srv, "/c/b/state").json()["instance"] != instance, timeout=20, interval=IDLE_TIMEOUT * 3,
             what="the idle object to be evicted after its socket closed")


def test_fetch_with_an_upgrade_header_gives_a_socket_to_accept(srv, peer):
    assert get(srv, "/c/f/open", url=peer.url("/", scheme="http"), via="fetch").json() == [101, ""]
    get(srv, "/c/f/send", text="over fetch")
    wait_for(lambda: has(srv, "f", "message", "echo:over fetch"), what="the echo")
    peer.push("pushed")
    wait_for(lambda: has(srv, "f", "message", "pushed"), what="a message from the server")
    # A server that does not upgrade: its own answer comes back, with no socket.
    assert get(srv, "/c/g/open", url=peer.url("/deny", scheme="http"), via="fetch").json() == [403, "no sockets here\n"]


def test_the_server_closing_reaches_the_object(srv, peer):
    get(srv, "/c/d/open", url=peer.url())
    wait_for(lambda: has(srv, "d", "open"), what="the open event")
    get(srv, "/c/d/send", text="close-me")
    wait_for(lambda: has(srv, "d", "close"), what="the close event")
    assert [d for k, d in events(srv, "d") if k == "close"] == [json.dumps([4000, "bye", True])]


def test_a_connection_that_fails_gives_error_then_close_1006(srv):
    get(srv, "/c/e/open", url=f"ws://127.0.0.1:{free_port()}/")
    wait_for(lambda: has(srv, "e", "close"), what="the close event")
    kinds = events(srv, "e")
    assert [k for k, _ in kinds] == ["error", "close"]
    assert kinds[1][1] == json.dumps([1006, "Failed to establish websocket connection", False])


def test_an_object_reset_closes_its_socket(srv, peer):
    get(srv, "/c/r/open", url=peer.url())
    wait_for(lambda: has(srv, "r", "open"), what="the open event")
    assert get(srv, "/c/r/abort").text == "ObjectResetError"
    wait_for(lambda: peer.closes, what="the server to see the socket close")
    assert peer.closes == [(1011, "Durable Object reset")]


def test_an_entrypoint_opens_one_too(srv, peer):
    assert get(srv, "/entry", url=peer.url()).text == "echo:from the entrypoint"
    wait_for(lambda: peer.closes, what="the entrypoint's close")
    assert peer.closes == [(1000, "")]


def test_open_sockets_are_closed_going_away_at_shutdown(tmp_path, peer):
    with ServerProcess(PROJECT, tmp_path / "data", args=["--durability", "os"], log_path=tmp_path / "s.log") as s:
        get(s, "/c/s/open", url=peer.url())
        wait_for(lambda: has(s, "s", "open"), what="the open event")
    assert peer.closes == [(1001, "server shutting down")]
