"""A key-value entry that deletes itself when its time to live runs out: one object per key, its
alarm set to the expiry time, and ``alarm()`` calling ``delete_all()``.

    PUT    /entries/<key>?ttl=<seconds>   store the body for that long (default 60 s); again: renew
    GET    /entries/<key>                 200 with the value and "expires_at", or 404
    DELETE /entries/<key>                 delete it now

An expired entry leaves nothing behind: ``delete_all()`` drops its data and its alarm, and duro
removes the object's database file.
"""

import time

from duro import DurableObject, Response, WorkerEntrypoint


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Entry(DurableObject):
    async def put(self, value: str, ttl_s: float) -> int:
        expires_at = now_ms() + int(ttl_s * 1000)
        await self.ctx.storage.put("value", value)
        await self.ctx.storage.set_alarm(expires_at)  # replaces the old expiry: a renewal
        return expires_at

    async def get(self):
        expires_at = await self.ctx.storage.get_alarm()
        if expires_at is None or expires_at <= now_ms():
            # Expired (the alarm may be a few milliseconds from running): never serve a stale value.
            return None
        return {"value": await self.ctx.storage.get("value"), "expires_at": expires_at}

    async def delete(self) -> None:
        await self.ctx.storage.delete_all()

    async def alarm(self):
        await self.ctx.storage.delete_all()  # data and alarm; the file goes too


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        parts = request.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] != "entries" or not parts[1]:
            return Response("try PUT /entries/<key>?ttl=<seconds>", status=404)
        entry = self.env.ENTRY.get_by_name(parts[1])
        if request.method == "PUT":
            q = dict(p.split("=", 1) for p in request.query.split("&") if "=" in p)
            try:
                ttl = float(q.get("ttl", "60"))
            except ValueError:
                return Response("ttl must be a number of seconds", status=400)
            if not 0 < ttl <= 365 * 86400:
                return Response("ttl must be between 0 and one year", status=400)
            return Response.json({"expires_at": await entry.put(await request.text(), ttl)})
        if request.method == "DELETE":
            await entry.delete()
            return Response(None, status=204)
        found = await entry.get()
        if found is None:
            return Response("not found", status=404)
        return Response.json(found)
