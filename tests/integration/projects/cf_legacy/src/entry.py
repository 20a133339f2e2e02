from js import Response, URL, Headers


async def on_fetch(request, env):
    url = URL.new(request.url)
    name = url.searchParams.get("name") or "World"
    headers = Headers.new({"x-path": url.pathname}.items())
    return Response.new(f"Hello {name}!", headers=headers, status=201)
