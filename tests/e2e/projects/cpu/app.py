"""Objects that run past their CPU budget, for tests/e2e/test_cpu_limit.py. The entrypoint answers
with the error an object call raised: its type, message and reset flag."""

import itertools
import os

from duro import DurableObject, Response, WorkerEntrypoint


class Spin(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        self.instance = os.urandom(4).hex()  # tells one instance from the next

    async def hello(self):
        return self.instance

    async def spin(self):
        while True:
            pass

    async def stubborn(self):
        # Catches the CPU-limit exception (a BaseException) and spins again, forever.
        while True:
            try:
                while True:
                    pass
            except BaseException:
                pass

    async def swallow(self):
        # Catches the CPU-limit exception and returns: the limit holds anyway.
        try:
            while True:
                pass
        except BaseException:
            return "swallowed"

    async def spin_later(self):
        async def spin():
            while True:
                pass
        self.ctx.wait_until(spin())
        return "started"

    async def sql_forever(self):
        return self.ctx.storage.sql.exec(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c").one()

    async def spin_in_c(self):
        return sum(itertools.repeat(1, 10**15))  # C code: never returns to the interpreter


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        _, what, name = request.url.split("?")[0].rsplit("/", 2)
        try:
            return Response(str(await getattr(self.env.SPIN.get_by_name(name), what)()))
        except Exception as e:
            reset = getattr(e, "durable_object_reset", False)
            return Response(f"{type(e).__name__} reset={reset}: {e}", status=500)
