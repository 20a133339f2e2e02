"""The anchor workload (same as ../shared/anchors/workerd/worker.js), for side-by-side numbers.

GET /obj/<name>  object <name>: durable SQL UPSERT counter, returns the count
GET /kv/<name>   object <name>: the same counter through the KV API (get + put)
GET /hello       no object: the runtime floor
"""

from duro import DurableObject, Response, WorkerEntrypoint


class Counter(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS counter (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")

    async def fetch(self, request):
        if request.path.startswith("/kv/"):
            n = (await self.ctx.storage.get("n") or 0) + 1
            await self.ctx.storage.put("n", n)
            return Response(str(n))
        row = self.ctx.storage.sql.exec(
            "INSERT INTO counter (k, v) VALUES ('n', 1) "
            "ON CONFLICT(k) DO UPDATE SET v = v + 1 RETURNING v").one()
        return Response(str(row["v"]))


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        path = request.path
        if path == "/hello":
            return Response("hello")
        parts = path.split("/")
        if len(parts) == 3 and parts[1] in ("obj", "kv") and parts[2]:
            return await self.env.NS.get(self.env.NS.id_from_name(parts[2])).fetch(request)
        return Response("not found", status=404)
