"""Alarms over HTTP, for the end-to-end and crash tests.

    POST /arm/<name>?in=<ms>[&sleep=<s>]   alarm in <ms>; alarm() sleeps <s> seconds before it finishes
    GET  /state/<name>                     {"alarm": ..., "started": n, "fired": [scheduled times]}
"""

import asyncio
import time

from duro import DurableObject, Response, WorkerEntrypoint


class Timer(DurableObject):
    async def arm(self, in_ms: int, sleep: float) -> int:
        when = time.time_ns() // 1_000_000 + in_ms
        await self.ctx.storage.put("sleep", sleep)
        await self.ctx.storage.set_alarm(when)
        return when

    async def state(self) -> dict:
        return {"alarm": await self.ctx.storage.get_alarm(),
                "started": await self.ctx.storage.get("started") or 0,
                "fired": await self.ctx.storage.get("fired") or []}

    async def alarm(self, info):
        await self.ctx.storage.put("started", (await self.ctx.storage.get("started") or 0) + 1)
        sleep = await self.ctx.storage.get("sleep") or 0
        if sleep:
            await asyncio.sleep(sleep)
        fired = await self.ctx.storage.get("fired") or []
        fired.append(info.scheduled_time)
        await self.ctx.storage.put("fired", fired)


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        parts = request.path.strip("/").split("/")
        if len(parts) != 2:
            return Response("not found", status=404)
        stub = self.env.TIMER.get_by_name(parts[1])
        if parts[0] == "arm" and request.method == "POST":
            q = dict(p.split("=", 1) for p in request.query.split("&") if "=" in p)
            when = await stub.arm(int(q.get("in", "0")), float(q.get("sleep", "0")))
            return Response.json({"alarm": when})
        if parts[0] == "state":
            return Response.json(await stub.state())
        return Response("not found", status=404)
