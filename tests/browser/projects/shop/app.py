"""A shop per name, for the dashboard's browser test: a SQL table, KV keys, an alarm and
hibernatable WebSockets.

    POST /stock/<shop>?item=<item>&qty=<n>   adds stock (SQL), remembers the last item (KV), sets an alarm
    GET  /stock/<shop>                       the stock as JSON
    GET  /ws/<shop>                          a hibernatable WebSocket tagged "shop:<shop>"; echoes
"""

import time

from duro import DurableObject, Response, WebSocketPair, WorkerEntrypoint


class Shop(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS stock (item TEXT PRIMARY KEY, qty INTEGER)")

    async def fetch(self, request):
        name = request.path.rsplit("/", 1)[-1]
        if request.headers.get("upgrade", "").lower() == "websocket":
            client, server = WebSocketPair()
            self.ctx.accept_websocket(server, [f"shop:{name}"])
            return Response(None, status=101, web_socket=client)
        return Response("use /stock or /ws", status=404)

    async def add(self, item: str, qty: int) -> int:
        total = self.ctx.storage.sql.exec(
            "INSERT INTO stock VALUES (?, ?) ON CONFLICT(item) DO UPDATE SET qty = qty + excluded.qty "
            "RETURNING qty", item, qty).one()["qty"]
        self.ctx.storage.kv.put("last_item", item)
        self.ctx.storage.kv.put(f"count:{item}", total)
        await self.ctx.storage.set_alarm(time.time_ns() // 1_000_000 + 3_600_000)
        print(f"added {qty} {item}")
        return total

    async def stock(self) -> dict:
        return {r["item"]: r["qty"] for r in self.ctx.storage.sql.exec("SELECT item, qty FROM stock ORDER BY item")}

    async def alarm(self, info=None):
        print("restock check")

    async def webSocketMessage(self, ws, message):
        ws.send(f"echo {message}")


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        parts = request.path.strip("/").split("/")
        if len(parts) != 2:
            return Response("not found", status=404)
        what, name = parts
        stub = self.env.SHOP.get_by_name(name)
        if what == "ws":
            return await stub.fetch(request)
        if what == "stock" and request.method == "POST":
            q = dict(p.split("=", 1) for p in request.query.split("&") if "=" in p)
            return Response.json({"qty": await stub.add(q["item"], int(q.get("qty", "1")))})
        if what == "stock":
            return Response.json(await stub.stock())
        return Response("not found", status=404)
