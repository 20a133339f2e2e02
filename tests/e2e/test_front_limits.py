"""The front protects itself: overload, header/target/body limits, slow clients, idle keep-alive,
the connection cap and the cap on request bodies in flight — on the real server, with real sockets.

The project (tests/e2e/projects/front) sets small limits so that each is reached in well under a
second of traffic; every socket has a timeout.
"""

import asyncio
import pathlib
import re
import socket
import time

import httpx

from .net import exchange

FRONT = pathlib.Path(__file__).resolve().parent / "projects" / "front"


def _status(raw: bytes) -> int:
    m = re.match(rb"HTTP/1\.1 (\d{3})", raw)
    return int(m.group(1)) if m else 0


def _header(raw: bytes, name: str) -> str | None:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == name:
            return v.strip()
    return None


def _wait_for_bodies_in_flight(srv, n: int, timeout: float = 10.0) -> None:
    """Wait until the server holds at least ``n`` bytes of request bodies (its /metrics gauge)."""
    token = (pathlib.Path(srv.data_dir) / "admin.token").read_text().strip()
    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(f"{srv.admin_url}/metrics", headers={"authorization": f"Bearer {token}"},
                         timeout=5).text
        m = re.search(r"^duro_request_body_bytes_in_flight ([0-9.e+]+)$", text, re.M)
        if m and float(m.group(1)) >= n:
            return
        assert time.monotonic() < deadline, f"the server never held {n} bytes of bodies: {m and m.group(0)}"
        time.sleep(0.02)


def _read_until_closed(s: socket.socket, deadline: float) -> bytes:
    chunks = []
    while time.monotonic() < deadline:
        try:
            c = s.recv(65536)
        except (TimeoutError, socket.timeout):
            continue
        except ConnectionResetError:
            break
        if not c:
            break
        chunks.append(c)
    return b"".join(chunks)


def _read_response(s: socket.socket, deadline: float) -> bytes:
    """One response (its head and ``content-length`` bytes of body), or what came before ``deadline``."""
    data = b""
    while time.monotonic() < deadline:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep and len(body) >= int(_header(data, "content-length") or 0):
            break
        try:
            c = s.recv(65536)
        except (TimeoutError, socket.timeout):
            continue
        except ConnectionResetError:
            break
        if not c:
            break
        data += c
    return data


async def _get_all(port: int, path: str, n: int) -> list[bytes]:
    """``n`` GETs of ``path`` at once, each on its own connection."""
    async def one() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
            return await asyncio.wait_for(reader.read(), 20)
        finally:
            writer.close()
    return await asyncio.gather(*(one() for _ in range(n)))


def _overload_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "Durable Object is overloaded" in line]


# ---------------------------------------------------------------------------------- overload


def test_overload_is_503_with_retry_after_and_refused_writes_are_not_applied(serve):
    srv = serve(FRONT)
    # 30 concurrent increments of one object, each staying in flight 0.3 s; the queue holds 20.
    answers = asyncio.run(_get_all(srv.port, "/incr/hot/0.3", 30))
    statuses = [_status(a) for a in answers]
    assert 500 not in statuses, answers
    ok = [a for a in answers if _status(a) == 200]
    refused = [a for a in answers if _status(a) == 503]
    assert len(ok) + len(refused) == 30 and refused, statuses
    for a in refused:
        assert _header(a, "retry-after") == "2", a
        assert a.endswith(b"Durable Object is overloaded. Too many requests queued."), a
    # Every caller told 503 had nothing written: the counter equals the number of 200s.
    count = exchange(srv.port, b"GET /count/hot HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert count.endswith(str(len(ok)).encode()), (count, len(ok))
    log = srv.log()
    assert "Traceback" not in log
    assert len(_overload_lines(log)) == 1, log  # one line per burst


def test_a_request_refused_after_it_wrote_elsewhere_is_not_told_to_retry(serve):
    # /both/first/hot writes to "first", then calls "hot", whose queue is full: the answer is 503
    # (overload) but without Retry-After, and it says the request may have been partly applied.
    srv = serve(FRONT)

    async def run() -> bytes:
        fill = asyncio.ensure_future(_get_all(srv.port, "/incr/hot/1.0", 20))
        await asyncio.sleep(0.5)
        both = await _get_all(srv.port, "/both/first/hot", 1)
        await fill
        return both[0]
    out = asyncio.run(run())
    assert _status(out) == 503 and _header(out, "retry-after") is None, out
    assert b"may have been partly applied" in out, out
    count = exchange(srv.port, b"GET /count/first HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert count.endswith(b"\r\n\r\n1"), count


def test_a_request_queued_too_long_is_503(serve):
    srv = serve(FRONT)

    async def run() -> list[bytes]:
        hold = asyncio.ensure_future(_get_all(srv.port, "/hold/gated/3", 1))
        await asyncio.sleep(0.3)  # the gate is locked for 3 s; max_queue_age is 1 s
        late = await _get_all(srv.port, "/incr/gated/0", 1)
        return late + await hold
    late, held = asyncio.run(run())
    assert _status(late) == 503 and _header(late, "retry-after") == "2", late
    assert late.endswith(b"Durable Object is overloaded. Requests queued for too long."), late
    assert _status(held) == 200
    count = exchange(srv.port, b"GET /count/gated HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert count.endswith(b"\r\n\r\n0"), count  # the refused increment never ran


# ---------------------------------------------------------------------------------- requests


def test_too_many_header_lines_is_431(serve):
    srv = serve(FRONT)
    head = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(10_000)) + b"\r\n"
    out = exchange(srv.port, head, wait=5)
    assert _status(out) == 431 and b"more than 30 header lines" in out, out[:300]


def test_a_never_ending_header_is_431_and_closed(serve):
    srv = serve(FRONT)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=0.5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: ")
        try:
            for _ in range(200):  # up to 3.2 MB of one header value, never ended
                s.sendall(b"a" * 16384)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = _read_until_closed(s, time.monotonic() + 5)
    assert _status(out) == 431 and b"limit of 8192 bytes" in out, out[:300]


def test_a_long_request_target_is_414(serve):
    srv = serve(FRONT)
    out = exchange(srv.port, b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", wait=5)
    assert _status(out) == 414 and b"limit of 2048 bytes" in out, out[:300]


def test_headers_that_never_end_are_408(serve):
    srv = serve(FRONT)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=0.5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")  # and nothing more
        out = _read_until_closed(s, time.monotonic() + 5)
    assert _status(out) == 408 and b"within 1 seconds" in out, out


def test_a_keep_alive_request_whose_head_stalls_is_408(serve):
    # The first request comes in one read: no header or body timer is armed for it. The next
    # one's head comes in part: its header timer must still be armed once that read is parsed.
    srv = serve(FRONT)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=0.5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert _status(_read_response(s, time.monotonic() + 5)) == 200
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")  # and nothing more
        started = time.monotonic()
        out = _read_until_closed(s, started + 5)
    assert _status(out) == 408 and b"within 1 seconds" in out and time.monotonic() - started < 4, out


def test_a_body_that_stops_after_a_second_read_is_408(serve):
    # The body's timer runs from its last byte: one read of it re-arms it (applied after the read).
    srv = serve(FRONT)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=0.5) as s:
        s.sendall(b"POST /body HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nfirst")
        time.sleep(0.3)  # a gap well inside the 1 s body timeout, to make the second read separate
        s.sendall(b"second")
        started = time.monotonic()
        out = _read_until_closed(s, started + 5)
    assert _status(out) == 408 and b"request body" in out and time.monotonic() - started < 4, out


def test_a_body_that_stops_is_408(serve):
    srv = serve(FRONT)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=0.5) as s:
        s.sendall(b"POST /body HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly ten b")
        out = _read_until_closed(s, time.monotonic() + 5)
    assert _status(out) == 408 and b"request body" in out, out


def test_an_idle_keep_alive_connection_is_closed(serve):
    srv = serve(FRONT)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=0.5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        started = time.monotonic()
        out = _read_until_closed(s, started + 5)
        assert _status(out) == 200 and time.monotonic() - started < 4, out  # closed by the server


def test_a_silent_connection_is_closed(serve):
    srv = serve(FRONT)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=0.5) as s:
        started = time.monotonic()
        out = _read_until_closed(s, started + 5)
        assert out == b"" and time.monotonic() - started < 4


def test_connections_past_the_cap_get_503_and_storage_keeps_working(serve):
    srv = serve(FRONT)
    held = []
    try:
        for _ in range(40):  # each in the middle of a request head: none is idle
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=2)
            s.sendall(b"GET / HTTP/1.1\r\n")
            held.append(s)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=2) as s:
            out = _read_until_closed(s, time.monotonic() + 3)
        assert _status(out) == 503 and _header(out, "retry-after") == "2", out
        assert b"the limit is 40" in out, out
    finally:
        for s in held:
            s.close()
    out = exchange(srv.port, b"GET /incr/after/0 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", wait=5)
    assert _status(out) == 200, out


def test_at_the_cap_the_longest_idle_connection_makes_room(serve):
    srv = serve(FRONT)
    held = []
    try:
        for _ in range(40):  # connected, silent
            held.append(socket.create_connection(("127.0.0.1", srv.port), timeout=2))
        out = exchange(srv.port, b"GET /incr/room/0 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", wait=5)
        assert _status(out) == 200, out
        first = held[0]  # the oldest was closed for it
        first.settimeout(2)
        assert first.recv(10) == b""
    finally:
        for s in held:
            s.close()


def test_request_bodies_in_flight_are_capped(serve):
    srv = serve(FRONT)
    # Two bodies of 3.5 MB each (each under the 4 MB body limit) would hold 7 MB; the cap is 6 MB.
    size = 3_500_000
    first = socket.create_connection(("127.0.0.1", srv.port), timeout=2)
    try:
        first.sendall(b"POST /body HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size + b"x" * (size - 10))
        # Until the server has read the first body (not only the kernel), the second one fits.
        _wait_for_bodies_in_flight(srv, size - 10)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=0.2) as s:
            s.sendall(b"POST /body HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)
            try:
                s.sendall(b"y" * size)
            except OSError:  # refused while sending: the answer is waiting
                pass
            out = _read_response(s, time.monotonic() + 3)
        assert _status(out) == 503 and _header(out, "retry-after") == "2", out[:300]
        assert b"the limit is 6000000" in out, out
        first.sendall(b"x" * 10)
        out = _read_response(first, time.monotonic() + 3)
        assert _status(out) == 200 and out.endswith(b"3500000"), out[:300]
    finally:
        first.close()


# ---------------------------------------------------------------------------------- names, logs


def test_an_object_name_past_the_limit_is_refused_with_the_limit(serve):
    srv = serve(FRONT)
    body = b"n" * 3_000_000
    out = exchange(srv.port, b"POST /name HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                   % len(body) + body, wait=5)
    assert _status(out) == 500, out[:300]
    log = srv.log()
    assert "the limit of 1024 bytes" in log and "SQLITE_TOOBIG" not in log, log[-2000:]
    assert max(len(line) for line in log.splitlines()) <= 4200


def test_a_flood_of_garbage_is_400_and_one_log_line(serve):
    srv = serve(FRONT)
    for _ in range(50):
        out = exchange(srv.port, b"\x16\x03\x01 not http at all\r\n\r\n", wait=2)
        assert _status(out) == 400, out
    log = srv.log()
    assert log.count("Invalid HTTP request received") == 1, log
