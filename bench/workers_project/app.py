"""For bench/workers.py: a durable SQL counter per name, and which worker holds a connection."""

import itertools
import os

from duro import DurableObject, Response, WorkerEntrypoint


class Counter(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS c (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)")

    async def add(self):
        return self.ctx.storage.sql.exec(
            "INSERT INTO c VALUES (1, 1) ON CONFLICT(k) DO UPDATE SET v = v + 1 RETURNING v").one()["v"]

    async def spin_in_c(self):
        return sum(itertools.repeat(1, 10**15))  # C code that never returns to the interpreter

    async def spin(self):
        while True:  # Python: the CPU limit stops it
            pass


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        path = request.path
        if path == "/entry":
            return Response(str(os.getpid()))
        if path.startswith("/spin_in_c/"):
            return Response(str(await self.env.COUNTER.get_by_name(path[11:]).spin_in_c()))
        if path.startswith("/spin/"):
            try:
                return Response(str(await self.env.COUNTER.get_by_name(path[6:]).spin()))
            except Exception as e:
                return Response(f"{type(e).__name__}: {e}", status=500)
        if path.startswith("/obj/"):
            return Response(str(await self.env.COUNTER.get_by_name(path[5:]).add()))
        return Response("not found", status=404)
