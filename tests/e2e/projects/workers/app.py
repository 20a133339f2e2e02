"""Objects for tests/e2e/test_workers.py (duro serve --workers N). Each answer says which process
ran the object, so a test can tell the workers apart; ``add`` keeps an in-memory count beside the
stored one: two live instances of one object would make them differ."""

import itertools
import json
import os
import time

from duro import DurableObject, Response, WebSocketPair, WebSocketRequestResponsePair, WorkerEntrypoint

CONSTRUCTED = [0]  # Room instances built in this process (the object's worker)


class Tally(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        self.mem = None
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")

    def _stored(self, key):
        rows = self.ctx.storage.sql.exec("SELECT v FROM t WHERE k = ?", key).to_array()
        return rows[0]["v"] if rows else 0

    async def add(self):
        if self.mem is None:
            self.mem = self._stored("n")  # a new instance starts from what is stored
        self.mem += 1
        stored = self.ctx.storage.sql.exec(
            "INSERT INTO t (k, v) VALUES ('n', 1) ON CONFLICT(k) DO UPDATE SET v = v + 1 RETURNING v").one()["v"]
        return {"mem": self.mem, "stored": stored, "pid": os.getpid()}

    async def get(self):
        return {"stored": self._stored("n"), "fired": self._stored("fired"), "pid": os.getpid()}

    async def spin(self):
        while True:
            pass

    async def abort(self):
        self.ctx.abort("asked to")

    async def spin_in_c(self):
        return sum(itertools.repeat(1, 10**15))  # C code: never returns to the interpreter

    async def hog(self):
        chunks = []
        while True:
            chunks.append(bytearray(8 << 20))  # 8 MiB at a time, touched: resident

    async def alarm_in(self, ms):
        await self.ctx.storage.set_alarm(time.time() * 1000 + ms)
        return os.getpid()

    async def fetch(self, request):
        body = await request.text()
        return Response(f"{request.method} {body} pid={os.getpid()}", status=201, headers={"x-object": "tally"})

    async def alarm(self):
        self.ctx.storage.sql.exec(
            "INSERT INTO t (k, v) VALUES ('fired', ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v", os.getpid())


class Room(DurableObject):
    """Hibernatable sockets across workers: every command is a text message ``verb:arg``."""

    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        CONSTRUCTED[0] += 1
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS closes (code INTEGER, reason TEXT, clean INTEGER)")

    async def fetch(self, request):
        client, server = WebSocketPair()
        tag = request.url.partition("?")[2] or "none"
        self.ctx.accept_websocket(server, [tag])
        self.ctx.set_websocket_auto_response(WebSocketRequestResponsePair("ping", "pong"))
        server.send(f"welcome {os.getpid()}")
        return Response(None, status=101, web_socket=client)

    async def websocket_message(self, ws, message):
        if isinstance(message, bytes):
            ws.send(b"bin:" + message)
            return
        verb, _, arg = message.partition(":")
        ctx = self.ctx
        if verb == "echo":
            ws.send(arg)
        elif verb == "tags":
            ws.send(json.dumps(ctx.get_tags(ws)))
        elif verb == "count":
            ws.send(str(len(ctx.get_websockets(arg or None))))
        elif verb == "attach":
            ws.serialize_attachment({"value": arg})
            ws.send("ok")
        elif verb == "attachment":
            ws.send(json.dumps(ws.deserialize_attachment()))
        elif verb == "broadcast":
            for other in ctx.get_websockets():
                other.send(f"all:{arg}")
        elif verb == "constructed":
            ws.send(str(CONSTRUCTED[0]))
        elif verb == "closes":
            ws.send(json.dumps(ctx.storage.sql.exec("SELECT code, reason, clean FROM closes").to_array()))
        elif verb == "close":
            ws.close(4000, "bye")

    async def websocket_close(self, ws, code, reason, clean):
        self.ctx.storage.sql.exec("INSERT INTO closes VALUES (?, ?, ?)", code, reason, int(clean))
        for other in self.ctx.get_websockets():
            if other is not ws:
                other.send(f"left:{code}")


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        if request.headers.get("upgrade") == "websocket":
            name = request.url.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
            resp = await self.env.ROOM.get_by_name(name).fetch(request)
            resp.headers.set("x-entry-pid", str(os.getpid()))  # which worker holds the connection
            return resp
        parts = request.url.split("?")[0].rstrip("/").rsplit("/", 2)
        what, name = parts[-2], parts[-1]
        query = request.url.partition("?")[2]
        if what == "entry":
            return Response(str(os.getpid()))
        if what == "abort_twice":  # a stub that saw a reset stays broken; a new stub works
            stub = self.env.TALLY.get_by_name(name)
            out = []
            for call in (stub.abort, stub.get, self.env.TALLY.get_by_name(name).get):
                try:
                    await call()
                    out.append("ok")
                except Exception as e:
                    out.append(f"{type(e).__name__} reset={getattr(e, 'durable_object_reset', False)}")
            return Response(json.dumps(out), headers={"content-type": "application/json"})
        stub = self.env.TALLY.get_by_name(name)
        try:
            if what == "alarm_in":
                result = await stub.alarm_in(int(query or "1000"))
            elif what == "fetch":
                resp = await stub.fetch(request)
                return resp
            else:
                result = await getattr(stub, what)()
            return Response(json.dumps(result), headers={"content-type": "application/json"})
        except Exception as e:
            return Response(f"{type(e).__name__} retryable={getattr(e, 'retryable', False)}: {e}", status=500)
