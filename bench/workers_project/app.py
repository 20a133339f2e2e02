"""For bench/workers.py: a durable SQL counter per name, and which worker holds a connection."""

import os

from duro import DurableObject, Response, WorkerEntrypoint


class Counter(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS c (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)")

    async def add(self):
        return self.ctx.storage.sql.exec(
            "INSERT INTO c VALUES (1, 1) ON CONFLICT(k) DO UPDATE SET v = v + 1 RETURNING v").one()["v"]


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        path = request.path
        if path == "/entry":
            return Response(str(os.getpid()))
        if path.startswith("/obj/"):
            return Response(str(await self.env.COUNTER.get_by_name(path[5:]).add()))
        return Response("not found", status=404)
