import asyncio
import contextvars
from urllib.parse import urlparse

import pyodide
from js import Date
from pyodide.ffi import JsException, can_run_sync, run_sync
from workers import DurableObject, FetchResponse, Response, WorkerEntrypoint

request_tag = contextvars.ContextVar("request_tag", default="unset")


def add_slowly(storage, by):
    """Synchronous code deep in a handler: waits on the loop twice, writes in between."""
    run_sync(asyncio.sleep(0.01))
    value = (run_sync(storage.get("n")) or 0) + by
    run_sync(storage.put("n", value))
    return value


class Counter(DurableObject):
    def add(self, by):  # a synchronous RPC method, as in workerd's jspi_method test
        return add_slowly(self.ctx.storage, by)

    async def add_async(self, by):
        request_tag.set(f"tag-{by}")
        value = add_slowly(self.ctx.storage, by)
        return [value, request_tag.get()]

    def nested(self):
        # run_sync of a coroutine that itself calls synchronous code using run_sync.
        async def outer():
            await asyncio.sleep(0)
            return add_slowly(self.ctx.storage, 100)
        return run_sync(outer())

    def sql_error(self):
        try:
            self.ctx.storage.sql.exec("SELECT * FROM no_such_table")
        except JsException as e:
            return [e.name, e.message]

    def clone_error(self):
        try:
            run_sync(self.ctx.storage.put("k", object()))
        except JsException as e:
            return [e.name, e.message]

    def in_own_task(self):
        async def spawned():
            return run_sync(asyncio.sleep(0))
        async def main():
            try:
                await asyncio.ensure_future(spawned())
            except RuntimeError as e:
                return str(e)
        return run_sync(main())

    def failing(self):
        return run_sync(self._fail())

    async def _fail(self):
        await asyncio.sleep(0)
        raise ValueError("raised while waited for")

    def fire_and_forget(self):
        # Not awaited, as Cloudflare code sometimes writes it (workerd's own test sets its alarm so):
        # the calls happen when they are made.
        self.ctx.storage.put("forgotten", "stored")
        self.ctx.storage.setAlarm(Date.now() + 10)

    def arm(self):
        run_sync(self.ctx.storage.setAlarm(Date.now() + 10))

    def alarm(self):  # run by the alarm scheduler's own task, not inside a request
        run_sync(asyncio.sleep(0))
        run_sync(self.ctx.storage.put("alarm", "rang"))

    async def get_forgotten(self):
        return await self.ctx.storage.get("forgotten")

    async def alarm_state(self):
        return await self.ctx.storage.get("alarm")

    async def fetch(self, request):
        return Response(f"n={await self.ctx.storage.get('n')} can_run_sync={can_run_sync()}")


constructions = {"n": 0}


class SlowStart(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        run_sync(asyncio.sleep(0.2))  # the constructor waits: no other event may see the object half built
        constructions["n"] += 1
        self.built = constructions["n"]

    async def fetch(self, request):
        return Response(f"built={self.built} constructions={constructions['n']}")


def call_sync(stub, by):
    return run_sync(stub.add(by))


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        parts = urlparse(request.url).path.strip("/").split("/")
        stub = self.env.COUNTER.getByName(parts[1] if len(parts) > 1 else "a")
        match parts[0]:
            case "version":
                return Response(pyodide.__version__)
            case "add":
                return Response.json(await stub.add(int(parts[2])))
            case "add-async":
                return Response.json(await stub.add_async(int(parts[2])))
            case "entry-sync":  # run_sync in the entrypoint's own synchronous code
                return Response.json(call_sync(stub, int(parts[2])))
            case "nested":
                return Response.json(await stub.nested())
            case "fire-and-forget":
                await stub.fire_and_forget()
                return Response.json(await stub.alarm_state())
            case "forgotten":
                return Response.json(run_sync(stub.get_forgotten()))
            case "arm":
                return Response.json(await stub.arm())
            case "alarm-state":
                return Response.json(await stub.alarm_state())
            case "sql-error":
                return Response.json(await stub.sql_error())
            case "clone-error":
                return Response.json(await stub.clone_error())
            case "own-task":
                return Response(await stub.in_own_task())
            case "failing":
                try:
                    await stub.failing()
                except ValueError as e:
                    return Response(f"ValueError: {e}")
            case "fetch":
                resp = await stub.fetch("http://do/")
                return Response(f"{type(resp).__name__} {isinstance(resp, FetchResponse)} {await resp.text()}")
            case "slow":
                return await self.env.SLOW.getByName(parts[1]).fetch(request)
        return Response("not found", status=404)
