"""A write made without ``await`` is durable before the answer leaves: over HTTP, RPC and a
WebSocket, the server is SIGKILLed right after each answer, restarted, and the value is there.
And a failed write nobody awaited resets the object: the request fails, nothing of it is kept."""

import pathlib

import httpx
from websockets.sync.client import connect

from duro.testing import ServerProcess

PROJECT = pathlib.Path(__file__).resolve().parents[1] / "e2e" / "projects" / "eager"


def _read(srv, name):
    r = httpx.get(f"{srv.url}/read/{name}", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_unawaited_writes_survive_sigkill_after_the_answer(tmp_path):
    data = tmp_path / "data"
    answers = {}
    for via in ("http", "rpc", "ws"):
        srv = ServerProcess(PROJECT, data, log_path=tmp_path / f"{via}.log").start()
        try:
            if via == "ws":
                with connect(srv.url.replace("http://", "ws://") + f"/ws/{via}", open_timeout=10) as ws:
                    ws.send("hello")
                    answers[via] = ws.recv(timeout=10)
            else:
                r = httpx.get(f"{srv.url}/{via}/{via}/v-{via}", timeout=10)
                answers[via] = r.text
        finally:
            srv.kill()  # SIGKILL as soon as the answer arrived

    assert answers == {"http": "stored", "rpc": "stored", "ws": "stored hello"}
    srv = ServerProcess(PROJECT, data, log_path=tmp_path / "after.log").start()
    try:
        assert _read(srv, "http") == {"http": "v-http"}
        assert _read(srv, "rpc") == {"rpc": "v-rpc"}
        assert _read(srv, "ws") == {"ws": "hello"}
    finally:
        srv.stop()


def test_failed_unawaited_write_fails_the_request(tmp_path):
    with ServerProcess(PROJECT, tmp_path / "data", log_path=tmp_path / "server.log") as srv:
        r = httpx.get(f"{srv.url}/http/f/first", timeout=10)
        assert r.status_code == 200
        r = httpx.get(f"{srv.url}/fail/f", timeout=10)
        assert r.status_code == 500 and "should not arrive" not in r.text
        assert _read(srv, "f") == {"http": "first"}
        assert srv.log().count("put() failed and was never awaited") == 1
