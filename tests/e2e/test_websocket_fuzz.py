"""Malformed WebSocket frames and handshakes from hypothesis against the real server
(duro's own connection layer, http/wsconn.py).

After a valid handshake, any sequence of frames — reserved bits, unknown opcodes, unmasked
frames, lengths that lie, fragments out of order, control frames too long, invalid UTF-8, Close
frames with bad codes — gets either answers or a Close frame with a protocol-level code, within a
bound; never a hang, never a traceback, and the server keeps serving the other sockets.
"""

import base64
import os
import re
import socket
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from duro.testing import ServerProcess

from .test_websockets import PROJECT, RawSocket

# Codes an endpoint may send (RFC 6455 7.4): the server's own protocol codes, or the peer's code
# echoed. Never 1004/1005/1006/1015 or anything outside 1000-4999.
UNSENDABLE = {1004, 1005, 1006, 1015}


@st.composite
def frames(draw) -> bytes:
    opcode = draw(st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA, 0x3, 0xB, 0xF]))
    fin = draw(st.booleans()) if opcode in (0x0, 0x1, 0x2) else draw(st.sampled_from([True, True, False]))
    rsv = draw(st.sampled_from([0, 0, 0, 1, 4]))
    payload = draw(st.one_of(
        st.binary(max_size=40),
        st.sampled_from([b"echo:hi", b"\xff\xfe", b"\xe2\x82", b"\x03\xe8", b"\x03\xe8bye", b"\x00\x01", b"\x0b\xb8",
                         "é".encode(), b"count"]),
        st.integers(126, 300).map(lambda n: b"p" * n),
    ))
    masked = draw(st.sampled_from([True, True, True, False]))
    lie = draw(st.sampled_from([0, 0, 0, 5, -3]))
    n = max(0, len(payload) + lie)
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    if n < 126:
        head += bytes([(0x80 if masked else 0) | n])
    elif n < 65536:
        head += bytes([(0x80 if masked else 0) | 126]) + struct.pack("!H", n)
    else:  # pragma: no cover - payloads stay small
        head += bytes([(0x80 if masked else 0) | 127]) + struct.pack("!Q", n)
    if masked:
        key = os.urandom(4)
        return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + payload


@pytest.fixture(scope="module")
def ws_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("wsfuzz")
    srv = ServerProcess(PROJECT, root / "data", log_path=root / "server.log").start()
    yield srv
    srv.stop()


def _drain(sock: socket.socket, deadline: float) -> bytes:
    out = b""
    sock.settimeout(0.1)
    while time.monotonic() < deadline:
        try:
            c = sock.recv(65536)
        except (TimeoutError, socket.timeout):
            if out and time.monotonic() > deadline - 0.5:
                break
            continue
        except OSError:
            break
        if not c:
            break
        out += c
    return out


def _close_codes(data: bytes) -> list[int]:
    """The codes of the Close frames the server sent (server frames are unmasked)."""
    codes, i = [], 0
    while i + 2 <= len(data):
        op, ln = data[i] & 0x0F, data[i + 1] & 0x7F
        off = 2
        if ln == 126:
            if i + 4 > len(data):
                break
            ln, off = struct.unpack("!H", data[i + 2:i + 4])[0], 4
        elif ln == 127:
            if i + 10 > len(data):
                break
            ln, off = struct.unpack("!Q", data[i + 2:i + 10])[0], 10
        payload = data[i + off:i + off + ln]
        if op == 0x8 and len(payload) >= 2:
            codes.append(struct.unpack("!H", payload[:2])[0])
        i += off + ln
    return codes


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(sequence=st.lists(frames(), min_size=1, max_size=6), cut=st.booleans())
def test_malformed_frames_get_answers_or_a_protocol_close(ws_server, sequence, cut):
    raw = RawSocket(ws_server.port, "/room/fuzz")
    try:
        data = b"".join(sequence)
        if cut:
            data = data[: max(1, len(data) // 2)]  # a frame that never completes
        try:
            raw.sock.sendall(data)
        except OSError:
            pass
        out = raw.buf + _drain(raw.sock, time.monotonic() + 1.0)
        for code in _close_codes(out):
            assert 1000 <= code <= 4999 and code not in UNSENDABLE, (sequence, out[:200])
    finally:
        raw.sock.close()


def test_malformed_handshakes_are_refused_with_http(ws_server):
    bad = [
        b"GET /room/h HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",  # no key
        b"GET /room/h HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n",
        b"GET /room/h HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) + b"\r\nSec-WebSocket-Version: 8\r\n\r\n",
    ]
    for head in bad:
        with socket.create_connection(("127.0.0.1", ws_server.port), timeout=2) as s:
            s.sendall(head)
            out = _drain(s, time.monotonic() + 2)
        m = re.match(rb"HTTP/1\.1 (\d{3})", out)
        assert m and m.group(1) in (b"400", b"426"), out[:300]


def test_after_the_fuzz_sockets_work_and_the_log_has_no_traceback(ws_server):
    raw = RawSocket(ws_server.port, "/room/after")
    try:
        assert raw.read_frame() == (0x1, b"welcome")
        raw.frame(0x1, b"echo:alive")
        assert raw.read_frame() == (0x1, b"alive")
    finally:
        raw.sock.close()
    log = ws_server.log()
    assert "Traceback" not in log, log[-3000:]


def test_an_upgrade_the_entrypoint_refuses_gets_its_http_answer(ws_server):
    key = base64.b64encode(os.urandom(16))
    with socket.create_connection(("127.0.0.1", ws_server.port), timeout=2) as s:
        s.sendall(b"GET /nowhere HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        out = _drain(s, time.monotonic() + 2)
    assert out.startswith(b"HTTP/1.1 404 Not Found\r\n") and out.endswith(b"not found"), out


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def test_an_idle_hibernated_websocket_costs_at_most_8_kb(tmp_path):
    # 3,000 sockets over 10 rooms; every room hibernates (no instance in memory); the server's
    # resident memory may grow by at most 8 KB a socket (uvicorn's layer took ~20 KB).
    srv = ServerProcess(PROJECT, tmp_path / "data", args=["--hibernation-timeout", "0.5"],
                        log_path=tmp_path / "server.log").start()
    socks = []
    try:
        warm = RawSocket(srv.port, "/room/warm")
        warm.sock.close()
        time.sleep(0.5)
        before = _rss_kib(srv.proc.pid)
        for i in range(3000):
            socks.append(RawSocket(srv.port, f"/room/m{i % 10}"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            live = [exchange_json(srv.port, f"/live/m{r}") for r in range(10)]
            if not any(live):
                break
            time.sleep(0.2)
        assert not any(live), "the rooms did not hibernate"
        time.sleep(0.5)
        per_socket = (_rss_kib(srv.proc.pid) - before) * 1024 / len(socks)
        assert per_socket <= 8192, f"{per_socket:.0f} bytes per idle hibernated socket"
    finally:
        for raw in socks:
            raw.sock.close()
        srv.stop()


def exchange_json(port: int, path: str):
    import json
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
        out = _drain(s, time.monotonic() + 5)
    return json.loads(out.split(b"\r\n\r\n", 1)[1])
