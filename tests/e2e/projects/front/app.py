"""A counter for the e2e tests of the front's limits and of overload (tests/e2e/test_front_limits.py)."""

import asyncio

from duro import DurableObject, Response, WorkerEntrypoint


class Counter(DurableObject):
    async def incr(self, pause):
        n = (await self.ctx.storage.get("n") or 0) + 1
        await self.ctx.storage.put("n", n)
        await asyncio.sleep(pause)  # keeps the event in flight, so that callers pile up
        return n

    async def count(self):
        return await self.ctx.storage.get("n") or 0

    async def hold(self, seconds):
        # The input gate stays locked: events queue at it.
        await self.ctx.block_concurrency_while(lambda: asyncio.sleep(seconds))
        return "held"


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        parts = request.path.strip("/").split("/")
        if parts[0] == "incr":
            return Response(str(await self.env.C.get_by_name(parts[1]).incr(float(parts[2]))))
        if parts[0] == "both":  # a write to one object, then a call to another
            await self.env.C.get_by_name(parts[1]).incr(0)
            return Response(str(await self.env.C.get_by_name(parts[2]).incr(0)))
        if parts[0] == "count":
            return Response(str(await self.env.C.get_by_name(parts[1]).count()))
        if parts[0] == "hold":
            return Response(await self.env.C.get_by_name(parts[1]).hold(float(parts[2])))
        if parts[0] == "name":  # the body is the object's name
            return Response(str(await self.env.C.get_by_name(await request.text()).count()))
        if parts[0] == "body":
            return Response(str(len(await request.bytes())))
        return Response("ok")
