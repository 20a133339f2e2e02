"""Schedules over HTTP, for the crash tests.

    POST /plan/<name>?in=<ms>&missed_after=<s>   four schedules due in <ms> (catch-up once, all,
                                                 skip; the fourth an hour later) and the object's
                                                 own alarm in an hour, all at once; answers their times
    GET  /state/<name>                           {"calls": [...], "schedules": [...], "alarm": ...}
"""

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
                "alarm": await self.ctx.storage.get_alarm()}


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        parts = request.path.strip("/").split("/")
        if len(parts) != 2:
            return Response("not found", status=404)
        stub = self.env.PLANNER.get_by_name(parts[1])
        if parts[0] == "plan" and request.method == "POST":
            q = dict(p.split("=", 1) for p in request.query.split("&") if "=" in p)
            return Response.json(await stub.plan(int(q.get("in", "0")), float(q.get("missed_after", "60"))))
        if parts[0] == "state":
            return Response.json(await stub.state())
        return Response("not found", status=404)
