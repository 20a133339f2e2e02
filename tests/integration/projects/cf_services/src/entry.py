import asyncio

from pyodide.ffi import JsException
from workers import DurableObject, Response, WorkerEntrypoint, wsgi


class Eager(DurableObject):
    """Storage calls happen when called; awaiting only collects the result."""

    async def unawaited(self):
        self.ctx.storage.put("a", 1)
        pending = self.ctx.storage.get("a")  # called, not yet awaited
        self.ctx.storage.put("a", 2)
        return [await pending, await self.ctx.storage.get("a")]

    async def as_tasks(self):
        got = await asyncio.create_task(self.ctx.storage.get("a"))
        both = await asyncio.gather(self.ctx.storage.put("b", 3), self.ctx.storage.get("b"))
        return [got, both]

    async def refused_at_the_call(self):
        try:
            await self.ctx.storage.put("x", object())  # refused: the awaitable raises
        except JsException as e:
            return e.name


def application(environ, start_response):
    body = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}?{environ['QUERY_STRING']} " \
           f"{environ['wsgi.input'].read().decode()} {environ.get('HTTP_X_A')} {environ['env'].GREETING}"
    start_response("201 Created", [("Content-Type", "text/plain"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
    return [body.encode()]


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        if request.url.endswith("/kv"):
            return Response(await self.env.CACHE.get("k"))
        if request.url.endswith("/has"):
            return Response.json([hasattr(self.env, n) for n in ("CACHE", "DB", "AI", "FLOW", "GREETING")])
        return await wsgi.fetch(application, request, self.env)
