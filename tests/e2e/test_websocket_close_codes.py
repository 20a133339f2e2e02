"""The WebSocket close handshake on the real server: the object's code and reason reach the client,
the client's reach the object, and a close frame without a code is 1005."""

import pathlib

import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from duro.testing import wait_for

from .test_websockets import RawSocket, stats, ws_url

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOCKETS = ROOT / "tests" / "integration" / "projects" / "sockets"


def test_websocket_close_handshake_codes(serve):
    srv = serve(SOCKETS)
    # The object closes: the client gets the object's code and reason.
    with connect(ws_url(srv, "/room/cl")) as ws:
        assert ws.recv(10) == "welcome"
        ws.send("close")
        with pytest.raises(ConnectionClosedError):  # 4000 is not one of the "OK" codes 1000/1001
            ws.recv(10)
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
