"""SIGTERM on the real server: an in-flight request finishes before the exit, and open WebSockets do
not hold the exit up."""

import contextlib
import pathlib
import threading
import time

import httpx
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
