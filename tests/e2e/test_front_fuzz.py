"""Malformed and oversized requests from hypothesis against the real server's front.

Whatever arrives, the answer is nothing or a well-formed refusal (400, 408, 413, 414, 431, 503) or
an ordinary answer; never a 500, never a traceback in the log, and the server keeps serving. The
project is tests/e2e/projects/front with its timeouts cut to 0.3 s so that a request that never
ends costs a fraction of a second.
"""

import re
import shutil
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from duro.testing import ServerProcess

from .test_front_limits import FRONT

ALLOWED = {200, 400, 404, 408, 413, 414, 431, 503}

_token = st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"G\x00T", b"", b"GET GET", b"\xff"])
_target = st.one_of(
    st.sampled_from([b"/", b"/count/x", b"/body", b"/incr/fz/0", b"*", b"http://a/b", b"/%zz", b"/\x7f"]),
    st.binary(min_size=0, max_size=64),
    st.integers(1000, 4000).map(lambda n: b"/" + b"a" * n),  # around the 2048-byte target limit
)
_version = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 x", b"", b"HTTP/9"])
_header = st.one_of(
    st.tuples(st.sampled_from([b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Expect",
                               b"Upgrade", b"X-A"]),
              st.sampled_from([b"a", b"0", b"5", b"-1", b"99999999999999999999", b"chunked", b"close",
                               b"100-continue", b"websocket", b"\x00", b"a\rb", b" "])),
    st.tuples(st.binary(min_size=0, max_size=16), st.binary(min_size=0, max_size=32)),
    st.integers(100, 3000).map(lambda n: (b"X-Big", b"v" * n)),  # toward the 8 KB header limit
)
_body = st.one_of(st.just(b""), st.binary(max_size=64), st.sampled_from([b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n",
                                                                         b"0\r\n\r\n", b"ffffffffff\r\n"]))


@st.composite
def requests(draw) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(min_size=1, max_size=256))  # no request at all
    line = draw(_token) + b" " + draw(_target) + b" " + draw(_version)
    headers = draw(st.lists(_header, max_size=40))
    count = draw(st.sampled_from([0, 0, 0, 35]))  # sometimes past the 30-line limit
    headers += [(b"X-N%d" % i, b"1") for i in range(count)]
    eol = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r"]))
    head = line + eol + b"".join(k + b": " + v + eol for k, v in headers)
    end = draw(st.sampled_from([eol, eol, b""]))  # sometimes the head never ends
    return head + end + draw(_body)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    project = root / "project"
    shutil.copytree(FRONT, project)
    toml = (project / "pyproject.toml").read_text()
    toml = toml.replace("header_timeout = 1.0", "header_timeout = 0.3").replace("body_timeout = 1.0",
                                                                                 "body_timeout = 0.3")
    (project / "pyproject.toml").write_text(toml)
    srv = ServerProcess(project, root / "data", log_path=root / "server.log").start()
    yield srv
    srv.stop()


def _send(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
        try:
            s.sendall(data)
        except OSError:
            pass
        out = b""
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                c = s.recv(65536)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                break
            if not c:
                break
            out += c
        return out


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=requests())
def test_malformed_requests_get_a_well_formed_refusal(fuzz_server, data):
    out = _send(fuzz_server.port, data)
    for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", out):
        assert int(status) in ALLOWED, (data[:200], out[:300])
    if out:
        assert out.startswith(b"HTTP/1.1 "), (data[:200], out[:300])


def test_after_the_fuzz_the_server_serves_and_logged_no_traceback(fuzz_server):
    out = _send(fuzz_server.port, b"GET /count/after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200"), out
    log = fuzz_server.log()
    assert "Traceback" not in log and "Exception in ASGI" not in log, log[-3000:]
