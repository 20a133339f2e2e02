"""Writes made without await, over HTTP, RPC and WebSockets (tests/crash/test_unawaited_sigkill.py).

Each handler stores a value with ``self.ctx.storage.put(...)`` as a bare statement, Cloudflare
style, and answers at once; the answer must not leave before that write is durable."""

import json
from urllib.parse import urlparse

from workers import DurableObject, Response, WorkerEntrypoint
from js import WebSocketPair


class Unencodable:
    pass


class Notes(DurableObject):
    async def fetch(self, request):
        path = urlparse(request.url).path
        if path.startswith("/ws/"):
            client, server = WebSocketPair.new().object_values()
            self.ctx.acceptWebSocket(server)
            return Response(None, status=101, web_socket=client)
        if path.startswith("/http/"):
            self.ctx.storage.put("http", path.rsplit("/", 1)[-1])  # not awaited
            return Response("stored")
        if path.startswith("/fail/"):
            self.ctx.storage.put("bad", Unencodable())  # fails, not awaited: the object is reset
            return Response("should not arrive")
        return Response(json.dumps(dict(await self.ctx.storage.list())), headers={"content-type": "application/json"})

    def remember(self, value):  # RPC, a plain method: it cannot await
        self.ctx.storage.put("rpc", value)
        return "stored"

    async def webSocketMessage(self, ws, message):
        self.ctx.storage.put("ws", message)  # not awaited
        ws.send("stored " + message)


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        parts = urlparse(request.url).path.strip("/").split("/")
        stub = self.env.NOTES.getByName(parts[1] if len(parts) > 1 else "default")
        if parts[0] == "rpc":
            return Response(await stub.remember(parts[2]))
        return await stub.fetch(request)
