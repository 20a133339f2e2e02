"""End-to-end: the chat example on a real server with real WebSocket clients (the page itself is
driven in headless Chromium by tests/browser/test_chat.py)."""

import json
import pathlib

import httpx
from websockets.sync.client import connect

HERE = pathlib.Path(__file__).parent


def recv(ws, want):
    """The next message of type ``want`` (skipping join/leave notices)."""
    while True:
        m = json.loads(ws.recv(10))
        if m["type"] == want:
            return m


def test_history_replay_rate_limit_and_persistence(serve):
    srv = serve(HERE)
    url = srv.url.replace("http://", "ws://") + "/api/rooms/Tea/websocket"
    assert httpx.get(srv.url + "/", timeout=10).headers["content-type"].startswith("text/html")
    assert httpx.get(srv.url + "/api/rooms/tea/websocket", timeout=10).status_code == 426

    sent = 0
    for client in range(12):  # 12 clients x 10 messages: each stays within its own rate limit
        with connect(f"{url}?name=u{client}&client=c{client}") as ws:
            recv(ws, "history")
            for i in range(10):
                ws.send(json.dumps({"text": f"m{sent}"}))
                assert recv(ws, "message")["text"] == f"m{sent}"
                sent += 1
    with connect(f"{url}?name=greedy&client=greedy") as ws:
        recv(ws, "history")
        for i in range(20):  # a burst of 10 is allowed, then 2 per second
            ws.send(json.dumps({"text": f"flood{i}"}))
        replies = [json.loads(ws.recv(10)) for _ in range(21)]  # 20 answers + greedy's own "joined"
        flood = [m for m in replies if m["type"] == "message"]
        assert 10 <= len(flood) < 20
        assert any(m["type"] == "error" and m["text"].startswith("slow down") for m in replies)
        sent += len(flood)
        ws.send("not json")
        assert "JSON" in recv(ws, "error")["text"]

    srv.restart()
    with connect(f"{url}?name=late&client=new") as ws:
        history = recv(ws, "history")["messages"]
        assert len(history) == 100
        assert [m["text"] for m in history][: 100 - len(flood)] == [f"m{i}" for i in range(sent - 100, 120)]
        recv(ws, "joined")
        ws.send("ping")  # keep-alive: the auto-response
        assert ws.recv(10) == "pong"
    assert len(httpx.get(srv.url + "/api/rooms/tea/messages", timeout=10).json()) == 100
