"""Objects for the integration tests of transactions, critical sections and resets, RPC and storage
corners and wait_until, and for the e2e HTTP corners and graceful shutdown."""

import asyncio

from duro import DurableObject, Response, WorkerEntrypoint
from duro.errors import SqlError


LATE = []
TASKS = set()
REACHED = []  # (method, object name) once a method is parked where a test needs it: tests wait on this


class Review(DurableObject):
    constructed = 0

    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        type(self).constructed += 1

    async def get(self, key):
        return await self.ctx.storage.get(key)

    async def put(self, key, value):
        await self.ctx.storage.put(key, value)
        return value

    async def stored(self):
        return await self.ctx.storage.list()

    async def txn_calls_other(self, other_name):
        async def body(txn):
            await txn.put("in_txn", 1)
            return await self.env.R.get_by_name(other_name).put("from_txn", 1)
        return await self.ctx.storage.transaction(body)

    async def txn_raises(self):
        async def body(txn):
            await txn.put("rolled", 1)
            raise ValueError("closure failed")
        try:
            await self.ctx.storage.transaction(body)
        except ValueError:
            pass
        await self.ctx.storage.put("after", 1)
        async def body2(txn):
            await txn.put("second", 1)
        await self.ctx.storage.transaction(body2)
        return await self.ctx.storage.get(["rolled", "after", "second"])

    async def write_then_call_then_raise(self, other_name):
        await self.ctx.storage.put("w", 1)
        await self.env.R.get_by_name(other_name).put("x", 1)
        raise ValueError("after call")

    async def call_self(self):
        await self.ctx.storage.put("self", 1)
        return await self.env.R.get(self.ctx.id).get("self")

    async def delete_all_then_write(self):
        await self.ctx.storage.put("a", 1)
        await self.ctx.storage.delete_all()
        await self.ctx.storage.put("b", 2)
        return await self.ctx.storage.list()

    async def kw(self, a, b=2, *, c=3):
        return [a, b, c]

    async def slow_write(self, seconds):
        await self.ctx.storage.put("started", 1)
        await asyncio.sleep(seconds)
        await self.ctx.storage.put("finished", 1)
        return "done"

    async def bcw_slow(self, seconds):
        async def work():
            await asyncio.sleep(seconds)
            await self.ctx.storage.put("bcw_done", 1)
        await self.ctx.block_concurrency_while(work)
        return "ok"

    async def instance_number(self):
        return id(self)

    async def sleep_then_put(self, key, seconds):
        REACHED.append(("sleep_then_put", self.ctx.id.name))
        await asyncio.sleep(seconds)  # not storage: the input gate is open here
        await self.ctx.storage.put(key, 1)
        return "stored"

    async def sleep_then_put_unawaited(self, key, seconds):
        REACHED.append(("sleep_then_put_unawaited", self.ctx.id.name))
        await asyncio.sleep(seconds)  # resumes inside another event's transaction()
        self.ctx.storage.put(key, 1)  # not awaited: waits for the transaction, in call order
        self.ctx.storage.put(key, 2)
        return await self.ctx.storage.get(key)

    async def sleep_then_sql(self, seconds):
        REACHED.append(("sleep_then_sql", self.ctx.id.name))
        await asyncio.sleep(seconds)  # resumes inside another event's transaction()
        self.ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS side (x)")
        self.ctx.storage.sql.exec("INSERT INTO side VALUES (1)")
        return "stored"

    async def side_rows(self):
        try:
            return self.ctx.storage.sql.exec("SELECT count(*) AS n FROM side").one()["n"]
        except SqlError as e:
            if "no such table: side" not in str(e):
                raise
            return 0

    async def txn_with_gather(self):
        async def body(txn):
            await asyncio.gather(txn.put("g1", 1), txn.put("g2", 2))
            return await asyncio.gather(txn.get("g1"), txn.get("g2"))
        return await asyncio.wait_for(self.ctx.storage.transaction(body), 5)

    async def failing_txn(self, seconds):
        async def body(txn):
            await txn.put("txn_key", 1)
            await asyncio.sleep(seconds)
            raise ValueError("give up")
        try:
            await self.ctx.storage.transaction(body)
        except ValueError:
            return "rolled back"

    async def slow_txn(self, seconds):
        async def body(txn):
            await txn.put("slow_txn", 1)
            await asyncio.sleep(seconds)
            return "committed"
        return await self.ctx.storage.transaction(body)

    async def bcw_fail(self, seconds):
        async def work():
            REACHED.append(("bcw_fail", self.ctx.id.name))
            await asyncio.sleep(seconds)
            raise RuntimeError("critical section failed")
        await self.ctx.block_concurrency_while(work)

    async def put_without_value(self):
        try:
            await self.ctx.storage.put("forgot")
        except TypeError as e:
            return str(e)
        return "stored"

    async def untracked_write_later(self, seconds):
        # A plain asyncio task (not ctx.wait_until): nothing keeps the instance in memory.
        async def later():
            await asyncio.sleep(seconds)
            try:
                await self.ctx.storage.put("late", 1)
                LATE.append("stored")
            except Exception as e:  # noqa: BLE001
                LATE.append(type(e).__name__)
        TASKS.add(asyncio.ensure_future(later()))
        return "scheduled"

    async def module_wait_until(self):
        import workers

        async def work(key):
            await asyncio.sleep(0.01)
            await self.ctx.storage.put(key, 1)
        workers.wait_until(work("from_coroutine"))
        workers.wait_until(asyncio.ensure_future(work("from_task")))
        return "scheduled"

    async def big(self, n):
        return "x" * n

    async def fetch(self, request):
        return Response("hello " + request.method, headers={"x-probe": "1"})


class CtorBcwRaises(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)

        async def init():
            await asyncio.sleep(0)
            await ctx.storage.put("from_bcw", 1)

        ctx.block_concurrency_while(init)
        raise RuntimeError("constructor failed")

    async def get(self, key):
        return await self.ctx.storage.get(key)


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        path = request.url.split("?")[0].split("/", 3)[-1]
        if path.startswith("slow/"):
            return Response(str(await self.env.R.get_by_name(path[5:]).slow_write(2.0)))
        if path == "forever":
            self.ctx.wait_until(asyncio.sleep(3600))
            return Response("scheduled")
        if path.startswith("status/"):
            return Response(None, status=int(path[7:]), headers={"etag": '"v1"'})
        if path.startswith("reason/"):
            return Response("with a reason", status=int(path[7:]), status_text="Quite Fine Thanks")
        if path.startswith("body"):
            return Response(str(len(await request.bytes())))
        name = path.rsplit("/", 1)[-1]
        return await self.env.R.get_by_name(name).fetch(request)
