"""Objects that make storage and RPC calls without awaiting them (tests/integration/test_eager_calls.py).

Everything here is written the way Cloudflare Python code may be: ``self.ctx.storage.put(k, v)`` as
a statement, ``stub.method()`` fired and forgotten. On Cloudflare those calls run; here too."""

import asyncio

from duro import DurableObject, Response, WorkerEntrypoint


class Unencodable:
    """A value the codec refuses: put() of it fails (DataCloneError, a TypeError)."""


class Eager(DurableObject):
    constructed = 0

    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        type(self).constructed += 1
        self.memory = 0

    # ---- storage, not awaited
    async def put_unawaited(self, key, value):
        self.ctx.storage.put(key, value)
        return "sent"

    def put_unawaited_sync(self, key, value):  # a plain (sync) method: no await possible at all
        self.ctx.storage.put(key, value)
        return "sent"

    async def in_order(self):
        s = self.ctx.storage
        s.put("a", 1)
        s.put("a", 2)
        s.put({"b": 1, "c": 1})
        s.delete("c")
        s.put("b", 3)
        first = s.get("a")  # already read: a later write does not change it
        s.put("a", 4)
        return [await first, await s.get(["a", "b", "c"])]

    async def alarm_unawaited(self, when):
        self.ctx.storage.setAlarm(when)
        return "set"

    async def delete_alarm_unawaited(self):
        self.ctx.storage.deleteAlarm()
        return "deleted"

    async def get_alarm(self):
        return await self.ctx.storage.getAlarm()

    async def alarm(self, info=None):
        self.ctx.storage.put("alarm_ran", True)

    async def delete_all_unawaited(self):
        self.ctx.storage.deleteAll()
        return "deleted"

    async def transaction_unawaited(self):
        async def body(txn):
            txn.put("t1", 1)
            txn.put("t2", 2)
        self.ctx.storage.transaction(body)
        return "started"

    async def as_task(self):
        t = asyncio.create_task(self.ctx.storage.put("task", 1))  # as with the SDK's coroutines
        got = await asyncio.gather(self.ctx.storage.get("task"), t)
        return got

    async def put_entries(self, *rest):
        try:
            await self.ctx.storage.put({"e": 1}, *rest)
        except TypeError as e:
            return str(e)
        return "stored"

    async def stored(self):
        return dict(await self.ctx.storage.list())

    async def bump(self):
        self.memory += 1
        return self.memory

    # ---- failures
    async def fail_unawaited(self):
        self.ctx.storage.put("good", 1)
        self.ctx.storage.put("bad", Unencodable())  # fails; nobody awaits it
        return "should not arrive"

    async def fail_awaited_later(self):
        pending = self.ctx.storage.put("bad", Unencodable())
        self.ctx.storage.put("after", 1)
        await asyncio.sleep(0)
        try:
            await pending
        except TypeError as e:
            first = str(e)
        try:
            await pending  # awaiting again raises again
        except TypeError as e:
            return [first, str(e)]

    async def fail_in_transaction_unawaited(self):
        async def body(txn):
            await txn.put("x", Unencodable())
        self.ctx.storage.transaction(body)
        return "started"

    async def escaped_txn(self, op):
        kept = []

        async def body(txn):
            kept.append(txn)
            if op == "rolled back":
                txn.rollback()
                txn.rollback()  # allowed twice
        await self.ctx.storage.transaction(body)
        txn = kept[0]
        out = []
        for call in (lambda: txn.get("k"), lambda: txn.put("k", 1), lambda: txn.delete("k"),
                     lambda: txn.list(), lambda: txn.getAlarm(), lambda: txn.setAlarm(10 ** 13),
                     lambda: txn.deleteAlarm()):
            try:
                await call()
            except RuntimeError as e:
                out.append(str(e))
        return out

    # ---- RPC, not awaited
    async def record(self, value):
        log = await self.ctx.storage.get("log") or []
        log.append(value)
        await self.ctx.storage.put("log", log)
        return len(log)

    async def boom(self):
        raise ValueError("boom in the callee")

    async def call_unawaited(self, other):
        stub = self.env.E.get_by_name(other)
        self.ctx.storage.put("mine", 1)  # the calls wait for this write at the output gate
        stub.record("first")
        stub.record("second")
        stub.record("third")
        return "called"

    async def call_boom_unawaited(self, other):
        self.env.E.get_by_name(other).boom()
        return "called"

    async def bcw_unawaited(self, fail):
        async def critical():
            await self.ctx.storage.put("in_bcw", 1)
            if fail:
                raise ValueError("critical section failed")
        self.ctx.blockConcurrencyWhile(critical)  # not awaited: the gate is locked at the call
        return "called"

    async def log(self):
        return await self.ctx.storage.get("log")


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        name = request.url.rsplit("/", 1)[-1]
        self.env.E.get_by_name(name).record("from the entrypoint")  # not awaited
        return Response("ok")
