"""Every kind of event, each printing a line, for ``duro tail`` and ``/metrics`` tests.

    GET  /fetch/<name>        the object's fetch() (prints "fetch <name>")
    POST /rpc/<name>          RPC increment() (SQL: one row written, prints "increment <n>")
    POST /fail/<name>         RPC fail(): raises ValueError (prints "about to fail")
    POST /arm/<name>?in=<ms>  an alarm in <ms>; alarm() prints "alarm fired"
    GET  /ws/<name>           WebSocket upgrade; each message gets webSocketMessage() (prints "ws <text>")
                              and an echo back
    POST /other/<name>        RPC ping() on another class
    POST /relay/<name>        RPC relay(): the object calls ping() on another class
"""

import asyncio
import logging
import time

from duro import DurableObject, Response, WebSocketPair, WorkerEntrypoint

log = logging.getLogger("observe-app")


class Counter(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS c (k TEXT PRIMARY KEY, v INTEGER)")

    async def fetch(self, request):
        name = request.path.rsplit("/", 1)[-1]
        if request.headers.get("upgrade", "").lower() == "websocket":
            client, server = WebSocketPair()
            self.ctx.accept_websocket(server)
            return Response(None, status=101, web_socket=client)
        print(f"fetch {name}")
        return Response(f"fetched {name}")

    async def increment(self) -> int:
        n = self.ctx.storage.sql.exec(
            "INSERT INTO c VALUES ('n', 1) ON CONFLICT(k) DO UPDATE SET v = v + 1 RETURNING v").one()["v"]
        print(f"increment {n}")
        return n

    async def relay(self, name: str) -> str:
        print("relay before")
        got = await self.env.OTHER.get_by_name(name).ping()
        print("relay after")
        return got

    async def abort_me(self) -> None:
        print("aborting")
        self.ctx.abort("stop")

    async def hold(self, seconds: float) -> None:
        await asyncio.sleep(seconds)  # not storage: other events may start meanwhile

    async def fail(self) -> None:
        print("about to fail")
        raise ValueError("boom")

    async def arm(self, in_ms: int) -> int:
        when = time.time_ns() // 1_000_000 + in_ms
        await self.ctx.storage.set_alarm(when)
        return when

    async def alarm(self, info=None):
        print("alarm fired")
        log.warning("alarm logged")

    async def webSocketMessage(self, ws, message):
        print(f"ws {message}")
        ws.send(f"echo {message}")


class Other(DurableObject):
    async def ping(self) -> str:
        print("ping", end="")  # no newline: kept as the event's last line
        self.ctx.storage.kv.put("pinged", True)
        return "pong"


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        parts = request.path.strip("/").split("/")
        if len(parts) != 2:
            return Response("not found", status=404)
        what, name = parts
        stub = self.env.COUNTER.get_by_name(name)
        if what in ("fetch", "ws"):
            return await stub.fetch(request)
        if what == "rpc":
            return Response(str(await stub.increment()))
        if what == "fail":
            try:
                await stub.fail()
            except ValueError as e:
                return Response(f"failed: {e}", status=500)
        if what == "arm":
            q = dict(p.split("=", 1) for p in request.query.split("&") if "=" in p)
            return Response.json({"alarm": await stub.arm(int(q.get("in", "0")))})
        if what == "relay":
            return Response(await stub.relay(name))
        if what == "other":
            return Response(await self.env.OTHER.get_by_name(name).ping())
        return Response("not found", status=404)
