"""Counters that answer with a bookmark, for the point-in-time-recovery crash test.

    POST /inc/<name>   {"n": new value, "bookmark": bookmark of the state with it, "id": hex id}
"""

from duro import DurableObject, Response, WorkerEntrypoint


class Counter(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS log (n INTEGER PRIMARY KEY, pad BLOB)")

    async def inc(self) -> dict:
        n = (await self.ctx.storage.get("n") or 0) + 1
        await self.ctx.storage.put("n", n)
        self.ctx.storage.sql.exec("INSERT INTO log VALUES (?, zeroblob(300))", n)
        return {"n": n, "bookmark": await self.ctx.storage.get_current_bookmark()}


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        parts = request.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] != "inc":
            return Response("not found", status=404)
        stub = self.env.COUNTER.get_by_name(parts[1])
        out = await stub.inc()
        out["id"] = str(stub.id)
        return Response.json(out)
