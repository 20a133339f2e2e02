"""SIGTERM on the real server: an in-flight request finishes before the exit, and open WebSockets do
not hold the exit up."""

import contextlib
import pathlib
import signal
import socket
import threading
import time

import httpx
import pytest
from websockets.sync.client import connect

from duro.testing import wait_for

from .test_websockets import ws_url

ROOT = pathlib.Path(__file__).resolve().parents[2]
REVIEW = ROOT / "tests" / "integration" / "projects" / "review"
SOCKETS = ROOT / "tests" / "integration" / "projects" / "sockets"


def test_sigterm_finishes_inflight_request_and_exits(serve, tmp_path):
    srv = serve(REVIEW)
    result = {}

    def call():
        try:
            result["r"] = httpx.get(srv.url + "/slow/s1", timeout=30)
        except httpx.HTTPError as e:
            result["e"] = e

    t = threading.Thread(target=call)
    t.start()
    # The request is in flight once its object has written (it then sleeps for 2 s).
    objects = pathlib.Path(srv.data_dir) / "do"
    wait_for(lambda: objects.is_dir() and any(objects.rglob("*.sqlite")), timeout=20,
             what="the slow request to reach its object")
    code = srv.stop(timeout=20)
    t.join(30)
    assert code in (0, -15), srv.log()  # uvicorn re-raises the signal after a graceful stop
    assert "r" in result and result["r"].text == "done", (result, srv.log())
    srv.start()  # the stop released the data directory: a new server takes it and serves
    assert httpx.get(srv.url + "/x", timeout=30).text == "hello GET"


def test_sigterm_with_open_websockets_exits_promptly(serve):
    srv = serve(SOCKETS)
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(connect(ws_url(srv, f"/room/term{i % 2}"))) for i in range(4)]
        stack.enter_context(connect(ws_url(srv, "/plain/term")))
        for ws in sockets:
            assert ws.recv(10) == "welcome"
        started = time.monotonic()
        code = srv.stop(timeout=20)
        assert code in (0, -15), srv.log()
        assert time.monotonic() - started < 10, srv.log()


DEPLOYS = ROOT / "tests" / "e2e" / "projects" / "deploys"  # limits.drain_timeout = 4


def _in_background(url: str) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def call():
        try:
            out["r"] = httpx.get(url, timeout=60)
        except httpx.HTTPError as e:
            out["e"] = e

    t = threading.Thread(target=call)
    t.start()
    return t, out


def test_sigterm_fails_what_outlasts_the_drain_time_with_a_retryable_503(serve):
    """Past the drain time a request still running is answered 503: with Retry-After when it wrote
    nothing, without (and saying why) when it wrote; the server exits within the drain time."""
    srv = serve(DEPLOYS)
    clean, clean_out = _in_background(srv.url + "/sleep/d1?60")
    dirty, dirty_out = _in_background(srv.url + "/write_sleep/d2?60")
    wait_for(lambda: "sleeping in d1" in srv.log() and "wrote, sleeping in d2" in srv.log(), timeout=20,
             what="both requests to reach their objects")
    started = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    # It stops accepting at once, while the two requests are still running.
    wait_for(lambda: "Shutting down" in srv.log(), timeout=10, what="the shutdown to begin")
    with pytest.raises(httpx.ConnectError):
        httpx.get(srv.url + "/version", timeout=5)
    assert clean.is_alive() and dirty.is_alive()
    code = srv.stop(timeout=30)
    took = time.monotonic() - started
    clean.join(30)
    dirty.join(30)
    assert code in (0, -15), srv.log()
    assert took < 4 + 2, (took, srv.log())  # limits.drain_timeout = 4
    r = clean_out.get("r")
    assert r is not None and r.status_code == 503, (clean_out, srv.log())
    assert r.headers.get("retry-after") and "retry it" in r.text, r.text
    r = dirty_out.get("r")
    assert r is not None and r.status_code == 503, (dirty_out, srv.log())
    assert "retry-after" not in r.headers and "not safe to retry" in r.text, r.text


def test_sigterm_closes_websockets_with_1012(serve):
    from websockets.exceptions import ConnectionClosed
    srv = serve(DEPLOYS)
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(connect(ws_url(srv, f"/room/r{i}"))) for i in range(3)]
        for ws in sockets:
            assert ws.recv(10).startswith("welcome")
        assert srv.stop(timeout=20) in (0, -15), srv.log()
        for ws in sockets:
            try:
                while True:
                    ws.recv(10)
            except ConnectionClosed as e:
                assert e.rcvd is not None and e.rcvd.code == 1012, e


def test_sigterm_with_workers_refuses_new_connections_while_draining(serve):
    """The supervisor holds the shared listening socket too: on SIGTERM it lets go of it, so a new
    connection is refused at once instead of waiting in the backlog until everything has stopped."""
    srv = serve(DEPLOYS, "--workers", "2")
    t, out = _in_background(srv.url + "/sleep/w1?60")
    wait_for(lambda: "sleeping in w1" in srv.log(), timeout=30, what="the request to reach its object")
    srv.proc.send_signal(signal.SIGTERM)

    def refused() -> bool:
        try:
            socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
            return False  # accepted into the backlog of a socket nobody will accept on again
        except ConnectionRefusedError:
            return True
    wait_for(refused, timeout=10, interval=0.1, what="new connections to be refused")
    assert t.is_alive()  # while the request in flight still drains
    assert srv.stop(timeout=30) == 0, srv.log()
    t.join(30)
    assert out["r"].status_code == 503, (out, srv.log()[-3000:])
