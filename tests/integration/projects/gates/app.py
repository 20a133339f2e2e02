"""Objects that exercise gates, RPC and resets, for the integration tests."""

import asyncio

from duro import DurableObject, Response, WorkerEntrypoint


REACHED = []  # (method, object name) once a method is where a test needs it: tests wait on this


class AppError(Exception):
    pass


class Probe(DurableObject):
    constructed = 0

    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        type(self).constructed += 1
        self.memory = 0

    async def rmw(self) -> int:
        n = (await self.ctx.storage.get("n") or 0) + 1
        await self.ctx.storage.put("n", n)
        return n

    async def rmw_with_sleep(self) -> int:
        n = (await self.ctx.storage.get("n") or 0) + 1
        await asyncio.sleep(0.001)  # not storage: other events may interleave here
        await self.ctx.storage.put("n", n)
        return n

    async def get_n(self):
        return await self.ctx.storage.get("n")

    def sync_method(self, a, b=2):
        return {"sum": a + b, "args": (a, b)}

    async def echo(self, value):
        return value

    async def bump_memory(self) -> int:
        self.memory += 1
        return self.memory

    async def fail_builtin(self):
        await self.ctx.storage.put("before_error", True)
        raise ValueError("bad value here")

    async def fail_custom(self):
        raise AppError("custom failure")

    async def fail_retryable(self):
        e = RuntimeError("try again")
        e.retryable = True
        raise e

    async def give_unencodable(self):
        return object()

    async def do_abort(self):
        await self.ctx.storage.put("aborted_write", 1)
        self.ctx.abort("stop now")

    async def critical(self, delay: float) -> str:
        async def work():
            REACHED.append(("critical", self.ctx.id.name))
            await asyncio.sleep(delay)
            self.memory += 100
            return "done"
        return await self.ctx.block_concurrency_while(work)

    async def failing_critical(self):
        async def work():
            raise AppError("inside critical section")
        await self.ctx.block_concurrency_while(work)

    async def txn_fail(self):
        async def body(txn):
            await txn.put("t1", 1)
            self.ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS t(x)")
            self.ctx.storage.sql.exec("INSERT INTO t VALUES (1)")
            raise AppError("roll back")
        await self.ctx.storage.transaction(body)

    async def txn_ok(self):
        async def body(txn):
            await txn.put("t2", 2)
            return "ok"
        return await self.ctx.storage.transaction(body)

    async def txn_state(self):
        rows = self.ctx.storage.sql.exec("SELECT name FROM sqlite_master WHERE name = 't'").to_array()
        return {"t1": await self.ctx.storage.get("t1"), "t2": await self.ctx.storage.get("t2"), "table": len(rows)}

    async def call_other(self, name):
        await self.ctx.storage.put("called", name)
        return await self.env.PROBE.get_by_name(name).rmw()

    async def fetch(self, request):
        return Response(f"fetched {request.method} {request.path}")


class Slow(DurableObject):
    """Its constructor closes the input gate until initialisation is done."""

    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        self.ready = False

        async def init():
            await asyncio.sleep(0.05)
            self.ready = True
        ctx.block_concurrency_while(init)

    async def is_ready(self):
        return self.ready


class Broken(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        raise AppError("constructor failed")

    async def anything(self):
        return 1


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        if request.path == "/boom":
            raise AppError("entrypoint exploded")
        name = request.path.strip("/") or "x"
        return Response(str(await self.env.PROBE.get_by_name(name).rmw()))
