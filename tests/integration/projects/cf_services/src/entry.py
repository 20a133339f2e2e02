from workers import Response, WorkerEntrypoint, wsgi


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
