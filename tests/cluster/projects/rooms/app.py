"""A chat room for tests/cluster/test_ws_cluster.py: hibernatable WebSockets with tags and
attachments, a broadcast, an auto-response ("ping" -> "pong"). Every answer names the node that ran
the object; the room stores each wake-up (constructor call) and each close event it was given.

Each hibernatable socket is greeted with "welcome USER", sent before the 101 leaves. Messages:
"who" answers the room's sockets (tags, attachments) as get_websockets() sees them; "to:USER:TEXT"
goes to the sockets tagged "user:USER"; "echo:..." comes back unstored; "close" makes the object
close the socket (4000); anything else is stored and broadcast as "USER:TEXT:N" (N: this socket's message count,
kept in its attachment) to every socket of the room. With the header "x-standard" the socket is a
standard one instead: its listener stores and echoes each message as "std:TEXT#N"."""

import json
import os

from duro import DurableObject, Response, WebSocketPair, WebSocketRequestResponsePair, WorkerEntrypoint

NODE = os.environ.get("DURO_TEST_NODE", str(os.getpid()))


class Room(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        sql = ctx.storage.sql
        sql.exec("CREATE TABLE IF NOT EXISTS boots (n INTEGER PRIMARY KEY AUTOINCREMENT, node TEXT)")
        sql.exec("CREATE TABLE IF NOT EXISTS msgs (n INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT, text TEXT)")
        sql.exec("CREATE TABLE IF NOT EXISTS closes (n INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT, code INTEGER,"
                 " node TEXT)")
        sql.exec("INSERT INTO boots (node) VALUES (?)", NODE)
        self.boot = sql.exec("SELECT count(*) AS c FROM boots").one()["c"]  # which instance this is
        ctx.set_websocket_auto_response(WebSocketRequestResponsePair("ping", "pong"))

    async def fetch(self, request):
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return Response("Expected Upgrade: websocket", status=426)
        user = request.headers.get("x-user") or "anon"
        client, server = WebSocketPair()
        if request.headers.get("x-standard"):
            return self._standard(user, client, server)
        self.ctx.accept_websocket(server, [f"user:{user}", "room"])
        server.serialize_attachment({"user": user, "count": 0})
        server.send(f"welcome {user}")  # sent before the 101: it must reach the client first, after it
        return Response(None, status=101, web_socket=client, headers={"x-node": NODE})

    def _standard(self, user, client, server):
        """A standard (not hibernatable) socket: its listeners echo each message, stored first."""
        server.accept()
        seen = [0]

        def on_message(event):
            seen[0] += 1
            self.ctx.storage.sql.exec("INSERT INTO msgs (user, text) VALUES (?, ?)", user, event.data)
            server.send(f"std:{event.data}#{seen[0]}")

        def on_close(event):
            self.ctx.storage.sql.exec("INSERT INTO closes (user, code, node) VALUES (?, ?, ?)", user, event.code, NODE)

        server.add_event_listener("message", on_message)
        server.add_event_listener("close", on_close)
        return Response(None, status=101, web_socket=client)

    async def websocket_message(self, ws, message):
        att = ws.deserialize_attachment()
        att["count"] += 1
        ws.serialize_attachment(att)
        if message == "who":
            socks = [{"tags": self.ctx.get_tags(s), "att": s.deserialize_attachment()}
                     for s in self.ctx.get_websockets()]
            ws.send(json.dumps({"node": NODE, "boot": self.boot, "sockets": socks}))
        elif message.startswith("to:"):
            _, user, text = message.split(":", 2)
            for s in self.ctx.get_websockets(f"user:{user}"):
                s.send(f"from {att['user']}:{text}")
        elif message.startswith("echo:"):
            ws.send(message)  # not stored: a large message crosses the bridge both ways
        elif message == "close":
            ws.close(4000, "bye from the room")
        else:
            # Stored before it is sent: the broadcast leaves after the commit is acknowledged.
            self.ctx.storage.sql.exec("INSERT INTO msgs (user, text) VALUES (?, ?)", att["user"], message)
            for s in self.ctx.get_websockets():
                s.send(f"{att['user']}:{message}:{att['count']}")

    async def websocket_close(self, ws, code, reason, was_clean):
        att = ws.deserialize_attachment()
        self.ctx.storage.sql.exec("INSERT INTO closes (user, code, node) VALUES (?, ?, ?)", att["user"], code, NODE)

    async def info(self):
        sql = self.ctx.storage.sql
        return {"node": NODE,
                "boots": [r["node"] for r in sql.exec("SELECT node FROM boots ORDER BY n").to_array()],
                "msgs": sql.exec("SELECT count(*) AS c FROM msgs").one()["c"],
                "closes": [[r["user"], r["code"]] for r in sql.exec("SELECT user, code FROM closes ORDER BY n").to_array()],
                "sockets": len(self.ctx.get_websockets())}


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        parts = request.path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "room":
            return await self.env.ROOM.get_by_name(parts[1]).fetch(request)
        if len(parts) == 2 and parts[0] == "info":
            try:
                return Response(json.dumps(await self.env.ROOM.get_by_name(parts[1]).info()),
                                headers={"content-type": "application/json"})
            except Exception as e:  # noqa: BLE001 - a retryable error: the object is moving
                if getattr(e, "retryable", False):
                    return Response(json.dumps({"error": str(e), "retryable": True}), status=503,
                                    headers={"content-type": "application/json"})
                raise
        return Response("not found", status=404)
