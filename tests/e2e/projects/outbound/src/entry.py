import asyncio
import json
import secrets
from urllib.parse import parse_qs, urlsplit

from js import WebSocket
from pyodide.ffi import create_proxy
from workers import DurableObject, Response, WorkerEntrypoint, fetch


class Client(DurableObject):
    """Holds one outbound socket; records every event it gets (in SQLite, so the record is written
    inside the event, through the input gate)."""

    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        self.instance = secrets.token_hex(4)  # changes when the instance is rebuilt
        self.ws = None
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS events(kind TEXT, data TEXT)")

    def _record(self, kind, data=""):
        self.ctx.storage.sql.exec("INSERT INTO events VALUES (?, ?)", kind, data)

    def _listen(self, ws):
        ws.addEventListener("open", create_proxy(lambda e: self._record("open", self.instance)))
        ws.addEventListener("message", create_proxy(lambda e: self._record("message", e.data)))
        ws.addEventListener("close", create_proxy(
            lambda e: self._record("close", json.dumps([e.code, e.reason, e.wasClean]))))
        ws.addEventListener("error", create_proxy(lambda e: self._record("error", e.message)))

    async def open_new(self, url):
        self.ws = WebSocket.new(url)
        self._listen(self.ws)
        return self.ws.readyState

    async def open_fetch(self, url):
        resp = await fetch(url, headers={"Upgrade": "websocket"})
        if resp.webSocket is None:
            return [resp.status, await resp.text()]
        self.ws = resp.webSocket
        self.ws.accept()
        self._listen(self.ws)
        self._record("open", self.instance)
        return [resp.status, ""]

    async def send(self, text, write_first=False):
        if write_first:
            self._record("wrote", text)
        self.ws.send(text)

    async def close(self, code=1000, reason=""):
        self.ws.close(code, reason)

    async def abort(self):
        self.ctx.abort("reset by the test")

    async def events(self):
        return [[r["kind"], r["data"]] for r in self.ctx.storage.sql.exec("SELECT * FROM events ORDER BY rowid")]

    async def state(self):
        return {"instance": self.instance, "ready_state": None if self.ws is None else self.ws.readyState}


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        parts = urlsplit(request.url)
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path = parts.path.strip("/").split("/")
        if path[0] == "entry":
            return await self.from_entrypoint(q["url"])
        stub = self.env.CLIENT.getByName(path[1])
        action = path[2]
        if action == "open":
            opener = stub.open_fetch if q.get("via") == "fetch" else stub.open_new
            return Response.json(await opener(q["url"]))
        if action == "send":
            await stub.send(q["text"], q.get("write") == "1")
        elif action == "close":
            await stub.close(int(q.get("code", 1000)), q.get("reason", ""))
        elif action == "abort":
            try:
                await stub.abort()
            except Exception as e:
                return Response(type(e).__name__)
        elif action == "events":
            return Response.json(await stub.events())
        elif action == "state":
            return Response.json(await stub.state())
        return Response("ok")

    async def from_entrypoint(self, url):
        """A stateless round trip: open, send, wait for the reply, close."""
        ws = WebSocket.new(url)
        opened, reply = asyncio.Event(), asyncio.get_running_loop().create_future()
        ws.addEventListener("open", lambda e: opened.set())
        ws.addEventListener("message", lambda e: reply.done() or reply.set_result(e.data))
        await asyncio.wait_for(opened.wait(), 10)
        ws.send("from the entrypoint")
        text = await asyncio.wait_for(reply, 10)
        ws.close()
        return Response(text)
