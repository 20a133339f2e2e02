"""A chat: every room is a Durable Object, every client has a rate limiter object.

    GET /                                      the page (static/index.html)
    GET /api/rooms/<room>/websocket?name=&client=   join a room (WebSocket)
    GET /api/rooms/<room>/messages             the last 100 messages as JSON

A room keeps its messages in its own SQLite database and replays the last 100 to each newcomer.
Its sockets are hibernatable: an idle room leaves memory while everyone stays connected, and the
page's keep-alive pings are answered without waking it. Each message first asks the sender's
RateLimiter object for a token.
"""

import json
import pathlib
import time
from urllib.parse import parse_qs

from duro import DurableObject, Response, WebSocketPair, WebSocketRequestResponsePair, WorkerEntrypoint

PAGE = pathlib.Path(__file__).with_name("static") / "index.html"
HISTORY = 100  # messages replayed to a newcomer
KEEP = 1000  # messages kept per room
MAX_TEXT = 1000
MAX_NAME = 32


class ChatRoom(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        ctx.storage.sql.exec(
            "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, ts REAL NOT NULL, "
            "name TEXT NOT NULL, text TEXT NOT NULL)")
        ctx.set_websocket_auto_response(WebSocketRequestResponsePair("ping", "pong"))

    def history(self, limit: int = HISTORY) -> list[dict]:
        rows = self.ctx.storage.sql.exec(
            "SELECT id, ts, name, text FROM messages ORDER BY id DESC LIMIT ?", limit).to_array()
        return [dict(r) for r in reversed(rows)]

    async def fetch(self, request):
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return Response("Expected Upgrade: websocket", status=426)
        params = parse_qs(request.query)
        name = params.get("name", [""])[0].strip()[:MAX_NAME] or "anonymous"
        client_id = params.get("client", [""])[0][:64] or name

        client, server = WebSocketPair()
        self.ctx.accept_websocket(server)
        server.serialize_attachment({"name": name, "client": client_id})
        server.send(json.dumps({"type": "history", "messages": self.history()}))
        self.broadcast({"type": "joined", "name": name, "online": len(self.ctx.get_websockets())})
        return Response(None, status=101, web_socket=client)

    def broadcast(self, message: dict) -> None:
        text = json.dumps(message)
        for ws in self.ctx.get_websockets():
            ws.send(text)

    async def websocket_message(self, ws, message):
        who = ws.deserialize_attachment()
        try:
            text = str(json.loads(message)["text"]).strip()
        except (ValueError, KeyError, TypeError):
            ws.send(json.dumps({"type": "error", "text": 'send JSON like {"text": "hello"}'}))
            return
        if not text:
            return
        if len(text) > MAX_TEXT:
            ws.send(json.dumps({"type": "error", "text": f"messages are limited to {MAX_TEXT} characters"}))
            return
        wait = await self.env.LIMITERS.get_by_name(who["client"]).take()
        if wait > 0:
            ws.send(json.dumps({"type": "error", "text": f"slow down: try again in {wait:.1f} s"}))
            return
        row = self.ctx.storage.sql.exec(
            "INSERT INTO messages (ts, name, text) VALUES (?, ?, ?) RETURNING id, ts, name, text",
            time.time(), who["name"], text).one()
        self.ctx.storage.sql.exec("DELETE FROM messages WHERE id <= ?", row["id"] - KEEP)
        # Sent after the write: every client sees the message only once it is on disk.
        self.broadcast({"type": "message", **dict(row)})

    async def websocket_close(self, ws, code, reason, was_clean):
        who = ws.deserialize_attachment()
        self.broadcast({"type": "left", "name": who["name"], "online": len(self.ctx.get_websockets())})

    async def websocket_error(self, ws, error):
        await self.websocket_close(ws, 1011, str(error), False)


class RateLimiter(DurableObject):
    """A token bucket per client: BURST messages at once, then RATE per second."""

    BURST = 10
    RATE = 2.0

    async def take(self) -> float:
        """Take a token: 0 if allowed, else the seconds to wait."""
        now = time.time()
        bucket = await self.ctx.storage.get("bucket") or {"tokens": float(self.BURST), "at": now}
        tokens = min(self.BURST, bucket["tokens"] + (now - bucket["at"]) * self.RATE)
        allowed = tokens >= 1
        await self.ctx.storage.put("bucket", {"tokens": tokens - 1 if allowed else tokens, "at": now})
        return 0.0 if allowed else (1 - tokens) / self.RATE


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        parts = request.path.strip("/").split("/")
        if request.path == "/":
            return Response(PAGE.read_text(), headers={"content-type": "text/html; charset=utf-8"})
        if len(parts) == 4 and parts[:2] == ["api", "rooms"] and parts[2]:
            room = self.env.ROOMS.get_by_name(parts[2].lower()[:64])
            if parts[3] == "websocket":
                return await room.fetch(request)
            if parts[3] == "messages":
                return Response.json(await room.history())
        return Response("not found", status=404)
