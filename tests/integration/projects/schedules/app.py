"""An object with named schedules next to its own alarm, for the schedule tests. Every call a
schedule or ``alarm()`` makes is appended to the KV key "log", so tests read it back after
evictions and restarts."""

from duro import DurableObject


class Planner(DurableObject):
    async def schedule(self, when, method, payload=None, **kw):
        s = await self.ctx.storage.schedule(when, method, payload, **kw)
        return {"id": s.id, "time": s.time, "type": s.type}

    async def schedule_camel(self, when, method, payload=None, **kw):
        s = await self.ctx.storage.schedule(when, method, payload, **kw)
        got = await self.ctx.storage.getSchedule(s.id)
        return [x.id for x in await self.ctx.storage.getSchedules()], got.callback

    async def schedule_object(self, when, method):
        return await self.ctx.storage.schedule(when, method)

    async def schedules(self, **kw):
        return [(s.id, s.method, s.payload, s.type, s.time, s.cron, s.catch_up)
                for s in await self.ctx.storage.get_schedules(**kw)]

    async def schedules_camel(self, criteria):
        return [s.id for s in await self.ctx.storage.getSchedules(criteria)]

    async def nothing(self):
        await self._append(["nothing"])

    async def cancel(self, sid):
        return await self.ctx.storage.cancel_schedule(sid)

    async def cancel_camel(self, sid):
        return await self.ctx.storage.cancelSchedule(sid)

    async def set_alarm(self, when):
        await self.ctx.storage.set_alarm(when)

    async def get_alarm(self):
        return await self.ctx.storage.get_alarm()

    async def delete_alarm(self):
        await self.ctx.storage.delete_alarm()

    async def raw_alarm_row(self):
        return self.ctx._act.db.get_alarm()

    async def fail_times(self, n):
        await self.ctx.storage.put("fail", n)

    async def log(self):
        return await self.ctx.storage.get("log") or []

    async def _append(self, entry):
        log = await self.ctx.storage.get("log") or []
        log.append(entry)
        await self.ctx.storage.put("log", log)

    # ---- what the schedules call
    async def ping(self, payload, schedule):
        await self._append(["ping", payload, schedule.id, schedule.time, schedule.missed, schedule.retry_count])

    async def flaky(self, payload, schedule):
        n = await self.ctx.storage.get("fail") or 0
        await self._append(["flaky", payload, schedule.time, schedule.retry_count])
        if n > 0:
            await self.ctx.storage.put("fail", n - 1)
            raise RuntimeError("flaky failed")

    async def chain(self, payload):
        await self._append(["chain", payload])
        if payload < 3:
            await self.ctx.storage.schedule(1, "chain", payload + 1)

    async def self_cancel(self, payload, schedule):
        await self._append(["self_cancel", schedule.time])
        await self.ctx.storage.cancel_schedule(schedule.id)

    async def aborter(self, payload, schedule):
        await self._append(["aborter", schedule.time])
        if payload == "no-retry":
            self.ctx.abort("give up", retryAlarm=False)
        if Planner.aborts_left > 0:  # (kept in memory: a reset rolls back the object's writes)
            Planner.aborts_left -= 1
            self.ctx.abort("again")

    aborts_left = 0

    async def aborts(self, n):
        Planner.aborts_left = n

    async def cancel_other(self, payload):
        await self._append(["cancel_other", payload])
        await self.ctx.storage.cancel_schedule(payload)

    async def delete_everything(self):
        await self.ctx.storage.delete_all()

    async def schedule_then_fail(self):
        async def body(txn):
            await txn.schedule(5, "ping", "rolled back", id="txn")
            raise ValueError("no")
        try:
            await self.ctx.storage.transaction(body)
        except ValueError:
            pass
        return await self.ctx.storage.get_schedule("txn")

    async def alarm_during(self):
        return await self.ctx.storage.get("seen_during")

    async def alarm(self, info):
        await self.ctx.storage.put("seen_during", await self.ctx.storage.get_alarm())
        nxt = await self.ctx.storage.get("alarm_next")
        if nxt:
            await self.ctx.storage.delete("alarm_next")
            await self.ctx.storage.set_alarm(nxt)
        if await self.ctx.storage.get("alarm_delete_and_fail"):
            await self.ctx.storage.delete("alarm_delete_and_fail")
            await self.ctx.storage.delete_alarm()
            raise RuntimeError("deleted, then failed")
        await self._append(["alarm", info.scheduled_time, info.retry_count])
        n = await self.ctx.storage.get("alarm_fail") or 0
        if n > 0:
            await self.ctx.storage.put("alarm_fail", n - 1)
            raise RuntimeError("alarm failed")

    async def alarm_next(self, when):
        await self.ctx.storage.put("alarm_next", when)

    async def alarm_delete_and_fail(self):
        await self.ctx.storage.put("alarm_delete_and_fail", True)

    async def alarm_fails(self, n):
        await self.ctx.storage.put("alarm_fail", n)
