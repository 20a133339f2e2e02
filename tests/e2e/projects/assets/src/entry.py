from urllib.parse import urlparse

from workers import Request, Response, WorkerEntrypoint

calls = []  # every path the Worker was asked for, to show which requests never entered Python


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        path = urlparse(request.url).path
        if path == "/__calls":
            return Response.json(calls)
        calls.append(path)
        if path.startswith("/binding/"):  # env.ASSETS.fetch with a rewritten URL
            rest = path[len("/binding"):]
            return await self.env.ASSETS.fetch(Request(f"http://assets.local{rest}", headers=request.headers))
        if path == "/passthrough":  # the request itself, as Cloudflare's examples do
            return await self.env.ASSETS.fetch(request)
        return Response(f"worker: {path}")
