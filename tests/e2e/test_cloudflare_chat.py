"""Cloudflare's Python chat-room shape runs unmodified (js.WebSocketPair, self.state.acceptWebSocket,
getWebSockets broadcast, webSocketMessage/Close/Error), driven by the `websockets` client library."""

import json
import pathlib

from websockets.sync.client import connect

PROJECT = pathlib.Path(__file__).parent / "projects" / "cf_chat"


def recv_json(ws):
    return json.loads(ws.recv(10))


def test_cloudflare_chat_room_runs_unchanged(serve):
    srv = serve(PROJECT)
    url = srv.url.replace("http://", "ws://")
    with connect(f"{url}/chat/lobby?name=ann") as ann:
        assert recv_json(ann) == {"type": "history", "messages": []}
        assert recv_json(ann) == {"type": "join", "name": "ann", "count": 1}
        with connect(f"{url}/chat/lobby?name=bob") as bob:
            assert recv_json(bob) == {"type": "history", "messages": []}
            assert recv_json(bob) == {"type": "join", "name": "bob", "count": 2}
            assert recv_json(ann) == {"type": "join", "name": "bob", "count": 2}
            ann.send(json.dumps({"text": "hi bob"}))
            assert recv_json(ann) == {"type": "message", "name": "ann", "text": "hi bob"}
            assert recv_json(bob) == {"type": "message", "name": "ann", "text": "hi bob"}
        assert recv_json(ann) == {"type": "leave", "name": "bob", "count": 1}
    srv.restart()
    with connect(f"{url}/chat/lobby?name=cid") as cid:
        assert recv_json(cid) == {"type": "history", "messages": [{"name": "ann", "text": "hi bob"}]}
    with connect(f"{url}/chat/other?name=dan") as dan:
        assert recv_json(dan) == {"type": "history", "messages": []}
