"""Schedules over HTTP, for the crash tests.

    POST /plan/<name>?in=<ms>&missed_after=<s>   four schedules due in <ms> (catch-up once, all,
                                                 skip; the fourth an hour later) and the object's
                                                 own alarm in an hour, all at once; answers their times
    POST /slow/<name>?in=<ms>&sleep=<s>          a schedule whose method records its start, then
                                                 sleeps <s> seconds before it records its call
    GET  /state/<name>                           {"calls": [...], "schedules": [...], "alarm": ...,
                                                  "started": n}
"""

import asyncio
import time

from duro import DurableObject, Response, WorkerEntrypoint


class Planner(DurableObject):
    async def plan(self, in_ms: int, missed_after: float) -> dict:
        s = self.ctx.storage
        out = {}
        for policy in ("once", "all", "skip"):
            out[policy] = (await s.schedule(in_ms / 1000, "call", policy, id=policy, catch_up=policy,
                                            missed_after=missed_after)).time
        out["later"] = (await s.schedule(3600, "call", "later", id="later")).time
        out["alarm"] = time.time_ns() // 1_000_000 + 3_600_000  # the object's own alarm: an hour later
        await s.set_alarm(out["alarm"])
        return out

    async def slow(self, in_ms: int, sleep: float) -> int:
        return (await self.ctx.storage.schedule(in_ms / 1000, "sleepy", sleep, id="slow")).time

    async def sleepy(self, sleep, schedule):
        await self.ctx.storage.put("started", (await self.ctx.storage.get("started") or 0) + 1)
        await asyncio.sleep(sleep)
        await self.call("slow", schedule)

    async def call(self, payload, schedule):
        calls = await self.ctx.storage.get("calls") or []
        calls.append([payload, schedule.time, schedule.missed])
        await self.ctx.storage.put("calls", calls)

    async def alarm(self, info):
        calls = await self.ctx.storage.get("calls") or []
        calls.append(["alarm", info.scheduled_time, 0])
        await self.ctx.storage.put("calls", calls)

    async def state(self) -> dict:
        return {"calls": await self.ctx.storage.get("calls") or [],
                "schedules": [s.id for s in await self.ctx.storage.get_schedules()],
                "alarm": await self.ctx.storage.get_alarm(),
                "started": await self.ctx.storage.get("started") or 0}


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        parts = request.path.strip("/").split("/")
        if len(parts) != 2:
            return Response("not found", status=404)
        stub = self.env.PLANNER.get_by_name(parts[1])
        if parts[0] == "plan" and request.method == "POST":
            q = dict(p.split("=", 1) for p in request.query.split("&") if "=" in p)
            return Response.json(await stub.plan(int(q.get("in", "0")), float(q.get("missed_after", "60"))))
        if parts[0] == "slow" and request.method == "POST":
            q = dict(p.split("=", 1) for p in request.query.split("&") if "=" in p)
            return Response.json({"time": await stub.slow(int(q.get("in", "0")), float(q.get("sleep", "0")))})
        if parts[0] == "state":
            return Response.json(await stub.state())
        return Response("not found", status=404)
