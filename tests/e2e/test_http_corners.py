"""HTTP corners on the real server: HEAD, a chunked request body, and 204/304 without Content-Length."""

import pathlib

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


def test_no_content_and_not_modified_carry_no_content_length(serve):
    # RFC 9110: no Content-Length in a 204; in a 304 it would describe the cached representation,
    # so a 0 there tells caches the stored body is empty.
    srv = serve(REVIEW)
    for status in (204, 304):
        out = exchange(srv.port, f"GET /status/{status} HTTP/1.1\r\nHost: a\r\n\r\n"
                                  f"GET /status/{status} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
        assert out.count(f"HTTP/1.1 {status}".encode()) == 2, out
        assert b"content-length" not in out.lower(), out


def test_status_text_reaches_the_status_line(serve):
    srv = serve(REVIEW)
    out = exchange(srv.port, b"GET /reason/200 HTTP/1.1\r\nHost: a\r\n\r\n"
                              b"GET /reason/404 HTTP/1.1\r\nHost: a\r\n\r\n"
                              b"GET /status/204 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 Quite Fine Thanks\r\n"), out
    assert b"HTTP/1.1 404 Quite Fine Thanks\r\n" in out, out
    assert b"HTTP/1.1 204 No Content\r\n" in out, out  # no status_text: the standard phrase
