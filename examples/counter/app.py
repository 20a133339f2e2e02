"""A named counter per URL, stored in each object's own SQLite database.

    POST /counters/<name>            add 1 (or ?by=N) and return the new value
    GET  /counters/<name>            the current value
    DELETE /counters/<name>          delete the counter (the object leaves no data behind)
"""

from duro import DurableObject, Response, WorkerEntrypoint


class Counter(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        ctx.storage.sql.exec(
            "CREATE TABLE IF NOT EXISTS counter (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")

    async def increment(self, by: int = 1) -> int:
        row = self.ctx.storage.sql.exec(
            "INSERT INTO counter (k, v) VALUES ('n', ?) "
            "ON CONFLICT(k) DO UPDATE SET v = v + excluded.v RETURNING v", by).one()
        return row["v"]

    async def value(self) -> int:
        rows = self.ctx.storage.sql.exec("SELECT v FROM counter WHERE k = 'n'").to_array()
        return rows[0]["v"] if rows else 0

    async def reset(self) -> None:
        await self.ctx.storage.delete_all()


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        parts = request.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] != "counters" or not parts[1]:
            return Response("try POST /counters/<name>", status=404)
        counter = self.env.COUNTER.get_by_name(parts[1])
        if request.method == "POST":
            by = 1
            if request.query.startswith("by="):
                try:
                    by = int(request.query[3:])
                except ValueError:
                    return Response("by must be an integer", status=400)
            return Response.json({"name": parts[1], "value": await counter.increment(by)})
        if request.method == "DELETE":
            await counter.reset()
            return Response(None, status=204)
        return Response.json({"name": parts[1], "value": await counter.value()})
