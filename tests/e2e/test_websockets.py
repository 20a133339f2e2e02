"""WebSockets on the real server (a `duro serve` subprocess on 127.0.0.1) with real clients: the
`websockets` library, and raw sockets for frames no polite client sends."""

import base64
import json
import os
import pathlib
import socket
import struct
import time

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from duro.testing import wait_for

PROJECT = pathlib.Path(__file__).resolve().parents[1] / "integration" / "projects" / "sockets"


def ws_url(srv, path):
    return srv.url.replace("http://", "ws://") + path


def stats(srv):
    return httpx.get(srv.url + "/stats", timeout=10).json()


def live(srv, name):
    return httpx.get(f"{srv.url}/live/{name}", timeout=10).json()


class RawSocket:
    """A hand-driven WebSocket client: it can send frames a real client never would."""

    def __init__(self, port, path):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            assert chunk, "connection closed during the handshake"
            head += chunk
        head, _, self.buf = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def frame(self, opcode, payload, *, declared_len=None):
        n = len(payload) if declared_len is None else declared_len
        mask = os.urandom(4)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + body)

    def read_frame(self):
        while True:
            if len(self.buf) >= 2:
                op, ln = self.buf[0] & 0x0F, self.buf[1] & 0x7F
                off = 2
                if ln == 126:
                    ln, off = struct.unpack("!H", self.buf[2:4])[0], 4
                elif ln == 127:
                    ln, off = struct.unpack("!Q", self.buf[2:10])[0], 10
                if len(self.buf) >= off + ln:
                    payload, self.buf = self.buf[off:off + ln], self.buf[off + ln:]
                    return op, payload
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed without a close frame")
            self.buf += chunk

    def read_close_code(self):
        while True:
            op, payload = self.read_frame()
            if op == 0x8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


def test_bad_input_is_answered_by_the_protocol_and_hurts_nobody_else(serve):
    srv = serve(PROJECT)
    with connect(ws_url(srv, "/room/bad")) as other:
        assert other.recv(10) == "welcome"

        # A plain HTTP request to a WebSocket route: the object itself answers 426 ...
        r = httpx.get(srv.url + "/room/bad", timeout=10)
        assert r.status_code == 426
        # ... and an object that answers 101 to it anyway makes the front answer 426.
        r = httpx.get(srv.url + "/plain/nope", timeout=10)
        assert r.status_code == 426 and r.headers["upgrade"] == "websocket"

        # A message over 32 MiB: close 1009 as soon as its header is read.
        raw = RawSocket(srv.port, "/room/bad")
        assert raw.read_frame() == (0x1, b"welcome")
        raw.frame(0x1, b"", declared_len=32 * 1024 * 1024 + 1)
        assert raw.read_close_code() == 1009
        raw.sock.close()

        # Invalid UTF-8 in a text frame: close 1007.
        raw = RawSocket(srv.port, "/room/bad")
        assert raw.read_frame() == (0x1, b"welcome")
        raw.frame(0x1, b"ok \xff\xfe")
        assert raw.read_close_code() == 1007
        raw.sock.close()

        # A client that vanishes without a close frame: the object sees 1006, the others are told.
        raw = RawSocket(srv.port, "/room/bad")
        assert raw.read_frame() == (0x1, b"welcome")
        raw.sock.shutdown(socket.SHUT_RDWR)
        raw.sock.close()
        assert other.recv(10) == "left:1006"

        other.send("echo:still here")
        assert other.recv(10) == "still here"
        events = stats(srv)["events"]
        assert ["error", "bad", "WebSocketError", 1009] in events
        assert ["error", "bad", "WebSocketError", 1007] in events
        assert ["close", "bad", 1006, "WebSocket disconnected without sending Close frame.", False] in events
        assert stats(srv)["constructed"]["bad"] == 1, "no error reset the object"
        other.send("count")
        assert other.recv(10) == "1"

        # A refused upgrade gets the entrypoint's HTTP answer.
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(srv, "/nope"))
        assert refused.value.response.status_code == 404


def test_hibernation_for_real(serve):
    srv = serve(PROJECT, "--hibernation-timeout", "0.3")
    with connect(ws_url(srv, "/room/hib?auto&t1")) as a, connect(ws_url(srv, "/room/hib?t2")) as b:
        assert a.recv(10) == "welcome" and b.recv(10) == "welcome"
        a.send("attach:kept")
        assert a.recv(10) == "ok"
        assert stats(srv)["constructed"]["hib"] == 1
        wait_for(lambda: not live(srv, "hib"), timeout=10, what="the instance to hibernate")

        a.send("ping")  # the auto-response is answered without waking the object
        assert a.recv(10) == "pong"
        assert not live(srv, "hib") and stats(srv)["constructed"]["hib"] == 1

        b.send("count")  # wakes it: the constructor runs again, every socket is still there
        assert b.recv(10) == "2"
        assert stats(srv)["constructed"]["hib"] == 2
        a.send("attachment")
        assert json.loads(a.recv(10)) == {"value": "kept"}
        a.send("tags")
        assert json.loads(a.recv(10)) == ["t1"]

        wait_for(lambda: not live(srv, "hib"), timeout=10, what="the instance to hibernate again")
        b.send("broadcast")
        assert a.recv(10) == "from-broadcast" and b.recv(10) == "from-broadcast"
        assert stats(srv)["constructed"]["hib"] == 3


def test_standard_socket_is_not_hibernated(serve):
    srv = serve(PROJECT, "--hibernation-timeout", "0.2", "--idle-timeout", "0.5")
    with connect(ws_url(srv, "/plain/std")) as ws:
        ws.send("a")
        assert ws.recv(10) == "a#1"
        deadline = time.monotonic() + 2.5  # several sweeps past both timeouts
        while time.monotonic() < deadline:
            ws.send("x")
            ws.recv(10)
            time.sleep(0.5)
        ws.send("b")
        assert ws.recv(10).startswith("b#")
        assert stats(srv)["constructed"]["std"] == 1
