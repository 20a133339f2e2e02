"""Objects for tests/e2e/test_deploys.py: graceful shutdown and rolling restarts. Every answer says
which process ran the object and which code version (``VERSION`` in the environment of the
process, or the file ``version.txt`` beside this one, read at import) it ran."""

import asyncio
import os
import pathlib

from duro import DurableObject, Response, WebSocketPair, WorkerEntrypoint

_HERE = pathlib.Path(__file__).resolve().parent
VERSION = (_HERE / "version.txt").read_text().strip() if (_HERE / "version.txt").exists() else "v0"


class Tally(DurableObject):
    def _table(self):
        self.ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")

    async def add(self):
        self._table()
        n = self.ctx.storage.sql.exec(
            "INSERT INTO t (k, v) VALUES ('n', 1) ON CONFLICT(k) DO UPDATE SET v = v + 1 RETURNING v").one()["v"]
        return {"n": n, "pid": os.getpid(), "version": VERSION}

    async def sleep(self, seconds):  # writes nothing
        print(f"sleeping in {self.ctx.id.name}", flush=True)
        await asyncio.sleep(seconds)
        return {"slept": seconds, "pid": os.getpid(), "version": VERSION}

    async def write_then_sleep(self, seconds):
        self._table()
        self.ctx.storage.sql.exec("INSERT INTO t (k, v) VALUES ('w', 1) ON CONFLICT(k) DO UPDATE SET v = v + 1")
        print(f"wrote, sleeping in {self.ctx.id.name}", flush=True)
        await asyncio.sleep(seconds)
        return {"slept": seconds}


class Room(DurableObject):
    async def fetch(self, request):
        client, server = WebSocketPair()
        self.ctx.accept_websocket(server)
        server.send(f"welcome {VERSION}")
        return Response(None, status=101, web_socket=client)

    async def websocket_message(self, ws, message):
        ws.send(f"{message} {VERSION} {os.getpid()}")


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        parts = request.url.split("?")[0].split("/", 3)[-1].split("/")
        verb, name = parts[0], parts[-1]
        query = request.url.partition("?")[2]
        if verb == "room":
            return await self.env.ROOM.get_by_name(name).fetch(request)
        stub = self.env.TALLY.get_by_name(name)
        if verb == "add":
            return Response.json(await stub.add())
        if verb == "sleep":
            return Response.json(await stub.sleep(float(query or 1)))
        if verb == "write_sleep":
            return Response.json(await stub.write_then_sleep(float(query or 1)))
        if verb == "version":
            return Response(VERSION)
        return Response("not found", status=404)
