"""Objects that exercise every WebSocket path. Module-level counters are how tests (in-process, or
over HTTP at /stats) see constructor calls and events."""

import asyncio
import json

from duro import DurableObject, Response, WebSocketPair, WebSocketRequestResponsePair, WorkerEntrypoint

CONSTRUCTED: dict[str, int] = {}
EVENTS: list[list] = []


class Room(DurableObject):
    """Hibernatable sockets: every command is a text message ``verb:arg``."""

    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        name = ctx.id.name
        CONSTRUCTED[name] = CONSTRUCTED.get(name, 0) + 1
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS log (n INTEGER PRIMARY KEY, text TEXT)")

    async def fetch(self, request):
        if request.headers.get("Upgrade") != "websocket":
            return Response("Expected Upgrade: websocket", status=426)
        client, server = WebSocketPair()
        tags = [t for t in request.query.split("&") if t and not t.startswith("auto")]
        self.ctx.accept_websocket(server, tags)
        server.serialize_attachment({"joined": len(self.ctx.get_websockets())})
        if "auto" in request.query:
            self.ctx.set_websocket_auto_response(WebSocketRequestResponsePair("ping", "pong"))
        server.send("welcome")
        return Response(None, status=101, web_socket=client)

    async def websocket_message(self, ws, message):
        if isinstance(message, bytes):
            ws.send(b"bin:" + message)
            return
        verb, _, arg = message.partition(":")
        ctx = self.ctx
        if verb == "echo":
            ws.send(arg)
        elif verb == "broadcast":
            for other in ctx.get_websockets(arg or None):
                other.send(f"from-broadcast")
        elif verb == "tags":
            ws.send(json.dumps(ctx.get_tags(ws)))
        elif verb == "count":
            ws.send(str(len(ctx.get_websockets(arg or None))))
        elif verb == "attach":
            ws.serialize_attachment({"value": arg})
            ws.send("ok")
        elif verb == "attachment":
            ws.send(json.dumps(ws.deserialize_attachment()))
        elif verb == "write":
            ctx.storage.sql.exec("INSERT INTO log (text) VALUES (?)", arg)
            ws.send("written")
        elif verb == "rows":
            ws.send(str(ctx.storage.sql.exec("SELECT count(*) AS c FROM log").one()["c"]))
        elif verb == "close":
            ws.close(4000, "bye")
        elif verb == "writeclose":
            ctx.storage.sql.exec("INSERT INTO log (text) VALUES (?)", arg)
            ws.close(4001, "written")
        elif verb == "boom":
            raise RuntimeError("boom in handler")
        elif verb == "sleep":
            await asyncio.sleep(float(arg))
            ws.send("slept")
        elif verb == "timeout":
            ctx.set_hibernatable_websocket_event_timeout(int(arg))
            ws.send(str(ctx.get_hibernatable_websocket_event_timeout()))
        elif verb == "autots":
            ts = ctx.get_websocket_auto_response_timestamp(ws)
            ws.send("none" if ts is None else "set")
        elif verb == "same":
            ws.send(str(any(w is ws for w in ctx.get_websockets())))
        elif verb == "abort":
            ctx.abort("test abort")

    def check_limits(self):
        """Each API misuse, and the error text it gets (an RPC method)."""
        ctx = self.ctx
        out = {}

        def attempt(name, fn):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - the point is the text
                out[name] = [type(e).__name__, str(e)]
            else:
                out[name] = None

        server = WebSocketPair().server
        attempt("send_before_accept", lambda: server.send("x"))
        attempt("too_many_tags", lambda: ctx.accept_websocket(WebSocketPair().server, [str(i) for i in range(11)]))
        attempt("ten_tags_with_duplicates", lambda: ctx.accept_websocket(
            WebSocketPair().server, [str(i) for i in range(10)] * 2))
        attempt("long_tag", lambda: ctx.accept_websocket(WebSocketPair().server, ["x" * 257]))
        std = WebSocketPair().server
        std.accept()
        attempt("accept_after_accept", lambda: ctx.accept_websocket(std))
        attempt("get_tags_standard", lambda: ctx.get_tags(std))
        big = WebSocketPair().server
        attempt("attachment_limit_ok", lambda: big.serialize_attachment(b"x" * 16000))
        attempt("attachment_too_large", lambda: big.serialize_attachment(b"x" * 16384))
        attempt("auto_request_too_large", lambda: WebSocketRequestResponsePair("x" * 2049, "y"))
        attempt("auto_response_too_large", lambda: WebSocketRequestResponsePair("x", "y" * 2049))
        attempt("event_timeout", lambda: ctx.set_hibernatable_websocket_event_timeout(604800001))
        closed = WebSocketPair().server
        ctx.accept_websocket(closed)
        closed.close(1000, "done")
        attempt("send_after_close", lambda: closed.send("x"))
        attempt("close_code_1006", lambda: closed.close(1006))
        attempt("client_end_send", lambda: WebSocketPair().client.send("x"))
        for ws in ctx.get_websockets():
            ws.close()
        return out

    def fill(self, n):
        """Accept ``n`` sockets that never connect; return the error of the first one refused."""
        for i in range(n):
            try:
                self.ctx.accept_websocket(WebSocketPair().server)
            except Exception as e:  # noqa: BLE001
                return [i, type(e).__name__, str(e)]
        return None

    async def websocket_close(self, ws, code, reason, was_clean):
        EVENTS.append(["close", self.ctx.id.name, code, reason, was_clean])
        for other in self.ctx.get_websockets():
            other.send(f"left:{code}")

    async def websocket_error(self, ws, error):
        EVENTS.append(["error", self.ctx.id.name, type(error).__name__, getattr(error, "code", None)])


class Plain(DurableObject):
    """A standard (non-hibernating) socket: accept() and listeners."""

    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        name = ctx.id.name
        CONSTRUCTED[name] = CONSTRUCTED.get(name, 0) + 1
        self.seen = 0

    async def fetch(self, request):
        client, server = WebSocketPair()
        server.accept()

        def on_message(event):
            self.seen += 1
            if event.data == "abort":
                self.ctx.abort("plain abort")
            if event.data == "writeclose":
                self.ctx.storage.kv.put("w", 1)
                server.close(4001, "written")
                return
            server.send(f"{event.data}#{self.seen}")

        server.add_event_listener("message", on_message)
        server.addEventListener("close", lambda e: EVENTS.append(["plain-close", e.code, e.reason, e.wasClean]))
        return Response(None, status=101, web_socket=client)


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        parts = request.path.strip("/").split("/")
        if parts[0] == "live" and len(parts) == 2:  # is the object's instance in memory?
            ns = self.env.ROOM
            return Response.json(ns._runtime.find(ns.unique_key, str(ns.id_from_name(parts[1]))) is not None)
        if parts[0] == "stats":
            return Response.json({"constructed": CONSTRUCTED, "events": EVENTS})
        if parts[0] == "room" and len(parts) == 2:
            return await self.env.ROOM.get_by_name(parts[1]).fetch(request)
        if parts[0] == "plain" and len(parts) == 2:
            return await self.env.PLAIN.get_by_name(parts[1]).fetch(request)
        if parts[0] == "worker":  # a socket accepted by the stateless entrypoint
            client, server = WebSocketPair()
            server.accept()
            server.add_event_listener("message", lambda e: server.send("worker:" + e.data))
            return Response(None, status=101, web_socket=client)
        return Response("not found", status=404)
