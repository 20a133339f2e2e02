import json
from urllib.parse import parse_qs, urlparse

from js import WebSocketPair
from workers import DurableObject, Response, WorkerEntrypoint


class ChatRoom(DurableObject):
    def __init__(self, state, env):
        super().__init__(state, env)
        self.state = state
        self.env = env

    async def fetch(self, request):
        if request.headers.get("Upgrade") != "websocket":
            return Response("Expected Upgrade: websocket", status=426)
        name = parse_qs(urlparse(request.url).query).get("name", ["anonymous"])[0]

        client, server = WebSocketPair.new().object_values()
        self.state.acceptWebSocket(server)
        server.serializeAttachment({"name": name})

        history = self.state.storage.sql.exec(
            "SELECT name, text FROM messages ORDER BY id DESC LIMIT 10"
        ).toArray() if self.has_table() else []
        server.send(json.dumps({"type": "history", "messages": [dict(r) for r in reversed(history)]}))
        self.broadcast({"type": "join", "name": name, "count": len(self.state.getWebSockets())})
        return Response(None, status=101, web_socket=client)

    def has_table(self):
        rows = self.state.storage.sql.exec(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'messages'").toArray()
        return len(rows) > 0

    def broadcast(self, message):
        text = json.dumps(message)
        for ws in self.state.getWebSockets():
            try:
                ws.send(text)
            except Exception:
                pass

    async def webSocketMessage(self, ws, message):
        data = json.loads(message)
        name = ws.deserializeAttachment()["name"]
        self.state.storage.sql.exec(
            "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, name TEXT, text TEXT)")
        self.state.storage.sql.exec("INSERT INTO messages (name, text) VALUES (?, ?)", name, data["text"])
        self.broadcast({"type": "message", "name": name, "text": data["text"]})

    async def webSocketClose(self, ws, code, reason, wasClean):
        name = ws.deserializeAttachment()["name"]
        ws.close(code, "Durable Object is closing WebSocket")
        self.broadcast({"type": "leave", "name": name, "count": len(self.state.getWebSockets())})

    async def webSocketError(self, ws, error):
        print("WebSocket error:", error)


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        path = urlparse(request.url).path.strip("/").split("/")
        if len(path) == 2 and path[0] == "chat":
            room = self.env.CHAT_ROOM.get(self.env.CHAT_ROOM.idFromName(path[1]))
            return await room.fetch(request)
        return Response("Usage: /chat/<room>?name=<name> (WebSocket)", status=404)
