import datetime
from urllib.parse import urlparse

from workers import DurableObject, Request, Response, WorkerEntrypoint


class QuotaError(Exception):
    """Raised and returned by the object: the caller gets this class back."""


class Widget:
    pass


class Values(DurableObject):
    async def identity(self, value):
        return value

    async def describe(self, value):
        return type(value).__name__

    async def handle_request(self, request):
        # The FastMCP-in-a-Durable-Object pattern: the entrypoint hands the whole Request over RPC.
        assert isinstance(request, Request)
        body = await request.text()
        return Response(f"{request.method} {urlparse(request.url).path} {body}", status=202,
                        headers=[("x-seen", request.headers.get("x-in") or ""), ("set-cookie", "a=1"),
                                 ("set-cookie", "b=2")])

    async def echo_response(self, response):
        assert isinstance(response, Response)
        return response

    async def make_exception(self, message):
        return QuotaError(message)

    async def raise_quota(self, message):
        raise QuotaError(message)

    async def store(self, value):
        await self.ctx.storage.put("v", value)
        return await self.ctx.storage.get("v")

    async def give_widget(self):
        return Widget()

    async def give_function(self):
        return len

    async def now(self):
        return datetime.datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.timezone.utc)


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        stub = self.env.VALUES.getByName("mcp")
        return await stub.handle_request(request)
