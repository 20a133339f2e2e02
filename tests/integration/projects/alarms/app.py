"""Objects with alarms, for the integration tests. Each records what its ``alarm()`` saw in its
own storage (key "log"), so a test can read it back after evictions and restarts."""

from duro import DurableObject


class Alarmed(DurableObject):
    constructed = 0

    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        type(self).constructed += 1

    # ---- driving it
    async def set(self, when, **options):
        await self.ctx.storage.set_alarm(when, **options)

    async def set_camel(self, when):
        await self.ctx.storage.setAlarm(when)
        return await self.ctx.storage.getAlarm()

    async def delete_camel(self):
        await self.ctx.storage.deleteAlarm()

    async def get(self):
        return await self.ctx.storage.get_alarm()

    async def delete(self):
        await self.ctx.storage.delete_alarm()

    async def behave(self, mode, arg=None):
        """What the next alarm() does: ok, fail, fail_times (arg: n), fail_and_set (arg: when),
        fail_and_delete, set_next (arg: when), hang_once (arg: seconds), abort, abort_no_retry."""
        await self.ctx.storage.put("mode", [mode, arg])

    async def log(self):
        return await self.ctx.storage.get("log") or []

    async def name(self):
        return self.ctx.id.name

    async def put_and_set_then_abort(self, when):
        await self.ctx.storage.put("x", 1)
        await self.ctx.storage.set_alarm(when)
        self.ctx.abort("on purpose")

    async def set_in_failed_transaction(self, when):
        async def body(txn):
            await txn.set_alarm(when)
            raise ValueError("roll back")
        try:
            await self.ctx.storage.transaction(body)
        except ValueError:
            pass
        return await self.ctx.storage.get_alarm()

    async def set_in_transaction(self, when):
        async def body(txn):
            await txn.setAlarm(when)
            return await txn.getAlarm()
        return await self.ctx.storage.transaction(body)

    async def wipe(self):
        await self.ctx.storage.delete_all()

    async def x(self):
        return await self.ctx.storage.get("x")

    # ---- the handler
    async def alarm(self, info):
        mode, arg = await self.ctx.storage.get("mode") or ["ok", None]
        log = await self.ctx.storage.get("log") or []
        during = await self.ctx.storage.get_alarm()
        log.append({"retry": info.retry_count, "is_retry": info.is_retry, "retryCount": info.retryCount,
                    "isRetry": info.isRetry, "scheduled": info.scheduled_time,
                    "scheduledTime": info.scheduledTime, "during": during, "name": self.ctx.id.name})
        await self.ctx.storage.put("log", log)
        if mode == "fail":
            raise RuntimeError("alarm failed on purpose")
        if mode == "fail_times" and info.retry_count < arg:
            raise RuntimeError(f"failure {info.retry_count}")
        if mode == "fail_and_set":
            await self.ctx.storage.put("mode", ["ok", None])
            await self.ctx.storage.set_alarm(arg)
            raise RuntimeError("failed after setting a new alarm")
        if mode == "fail_and_delete":
            await self.ctx.storage.delete_alarm()
            raise RuntimeError("failed after deleting the alarm")
        if mode == "set_next":
            await self.ctx.storage.put("mode", ["ok", None])
            await self.ctx.storage.set_alarm(arg)
            log[-1]["after_set"] = await self.ctx.storage.get_alarm()
            await self.ctx.storage.put("log", log)
        if mode == "hang_once":  # runs past the time limit (the test lowers it), once
            await self.ctx.storage.put("mode", ["ok", None])
            import asyncio
            await asyncio.sleep(arg)
        if mode == "abort":
            self.ctx.abort("abort in alarm")
        if mode == "abort_no_retry":
            self.ctx.abort("abort in alarm", retryAlarm=False)


class NoArg(DurableObject):
    async def set(self, when):
        await self.ctx.storage.set_alarm(when)

    async def count(self):
        return await self.ctx.storage.get("count") or 0

    async def alarm(self):
        await self.ctx.storage.put("count", await self.count() + 1)


class Legacy(DurableObject):
    async def set(self, when):
        await self.ctx.storage.set_alarm(when)

    async def seen(self):
        return await self.ctx.storage.get("seen")

    async def on_alarm(self, alarm_info):
        await self.ctx.storage.put("seen", alarm_info.retry_count)


class NoHandler(DurableObject):
    async def set(self, when):
        await self.ctx.storage.set_alarm(when)

    async def get(self):
        return await self.ctx.storage.get_alarm()
