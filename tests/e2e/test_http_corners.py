"""Review findings on the real server: HTTP corners, the admin token, graceful shutdown."""

import pathlib
import threading
import time

import httpx

from .net import exchange

ROOT = pathlib.Path(__file__).resolve().parents[2]
REVIEW = ROOT / "tests" / "integration" / "projects" / "review"


def test_head_has_no_body_and_keeps_the_connection_usable(serve):
    srv = serve(REVIEW)
    out = exchange(srv.port, b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert out.count(b"HTTP/1.1 200") == 2, out
    head, rest = out.split(b"\r\n\r\n", 1)
    assert rest.startswith(b"HTTP/1.1 200"), out  # no body after the HEAD answer
    assert rest.endswith(b"hello GET"), out


def test_chunked_request_body(serve):
    srv = serve(REVIEW)
    out = exchange(srv.port, b"POST /body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                              b"Connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"\r\n\r\n11"), out


def test_admin_needs_the_token(serve):
    srv = serve(REVIEW)
    assert httpx.post(srv.url + "/__duro/admin/ping").status_code == 403
    assert httpx.post(srv.url + "/__duro/admin/ping", headers={"authorization": "Bearer nope"}).status_code == 403
    token = (pathlib.Path(srv.data_dir) / "admin.token").read_text()
    r = httpx.post(srv.url + "/__duro/admin/ping", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["ok"] is True


def test_sigterm_finishes_inflight_request_and_exits(serve, tmp_path):
    srv = serve(REVIEW)
    result = {}

    def call():
        try:
            result["r"] = httpx.get(srv.url + "/slow/s1", timeout=30)
        except Exception as e:  # noqa: BLE001
            result["e"] = e

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.7)
    code = srv.stop(timeout=20)
    t.join(30)
    assert code in (0, -15), srv.log()  # uvicorn re-raises the signal after a graceful stop
    assert "r" in result and result["r"].text == "done", (result, srv.log())
    srv.start()
    token = (pathlib.Path(srv.data_dir) / "admin.token").read_text()
    assert token


SOCKETS = ROOT / "tests" / "integration" / "projects" / "sockets"


def test_websocket_close_handshake_codes(serve):
    import struct

    from websockets.sync.client import connect

    from duro.testing import wait_for

    from .test_websockets import RawSocket, stats, ws_url

    srv = serve(SOCKETS)
    # The object closes: the client gets the object's code and reason.
    with connect(ws_url(srv, "/room/cl")) as ws:
        assert ws.recv(10) == "welcome"
        ws.send("close")
        try:
            ws.recv(10)
        except Exception:  # ConnectionClosedOK
            pass
        assert ws.close_code == 4000 and ws.close_reason == "bye"
    # The client closes with a code and reason: the object sees them, cleanly.
    with connect(ws_url(srv, "/room/cl")) as ws:
        assert ws.recv(10) == "welcome"
        ws.close(4001, "later")
    wait_for(lambda: ["close", "cl", 4001, "later", True] in stats(srv)["events"], what="close 4001")
    # A close frame without a status code: 1005, clean.
    raw = RawSocket(srv.port, "/room/cl")
    assert raw.read_frame() == (0x1, b"welcome")
    raw.frame(0x8, b"")
    op, payload = raw.read_frame()
    assert op == 0x8
    raw.sock.close()
    wait_for(lambda: ["close", "cl", 1005, "", True] in stats(srv)["events"], what="close 1005")


def test_sigterm_with_open_websockets_exits_promptly(serve):
    from websockets.sync.client import connect

    from .test_websockets import ws_url

    import contextlib

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


def test_no_content_and_not_modified_carry_no_content_length(serve):
    # RFC 9110: no Content-Length in a 204; in a 304 it would describe the cached representation,
    # so a 0 there tells caches the stored body is empty.
    srv = serve(REVIEW)
    for status in (204, 304):
        out = exchange(srv.port, f"GET /status/{status} HTTP/1.1\r\nHost: a\r\n\r\n"
                                  f"GET /status/{status} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
        assert out.count(f"HTTP/1.1 {status}".encode()) == 2, out
        assert b"content-length" not in out.lower(), out
