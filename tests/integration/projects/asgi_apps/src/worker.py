from contextlib import asynccontextmanager
from urllib.parse import urlparse

from fastapi import BackgroundTasks, FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse as StarlettePlain
from starlette.routing import Route, WebSocketRoute

import asgi
from workers import DurableObject, Response, WorkerEntrypoint

events = []  # what the apps saw, read back through /fastapi/events


@asynccontextmanager
async def lifespan(app):
    events.append("startup")
    app.state.started = True
    yield {"from_lifespan": "state"}
    events.append("shutdown")


api = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    name: str
    price: float


@api.get("/fastapi/items/{item_id}")
async def read_item(item_id: int, q: str | None = None):
    return {"item_id": item_id, "q": q}


@api.post("/fastapi/items", status_code=201)
async def create_item(item: Item):
    return JSONResponse({"created": item.name, "price": item.price}, status_code=201, headers={"x-made": "yes"})


@api.get("/fastapi/env")
async def read_env(req: Request, env=asgi.env):
    return {"scope": req.scope["env"].GREETING, "dependency": env.GREETING,
            "state": req.scope["state"]["from_lifespan"]}


@api.get("/fastapi/path/{rest:path}")
async def read_path(rest: str, req: Request):
    return {"rest": rest, "raw_path": req.scope["raw_path"].decode()}


@api.post("/fastapi/upload")
async def upload(req: Request):
    size, chunks = 0, 0
    async for chunk in req.stream():
        if chunk:
            size += len(chunk)
            chunks += 1
    return {"size": size, "chunks": chunks}


@api.get("/fastapi/cookies")
async def cookies():
    r = PlainTextResponse("ok")
    r.set_cookie("first", "1")
    r.set_cookie("second", "2")
    return r


@api.get("/fastapi/stream")
async def stream():
    async def gen():
        for i in range(5):
            yield f"part {i}\n"
    return StreamingResponse(gen(), media_type="text/plain")


@api.get("/fastapi/background")
async def background(tasks: BackgroundTasks):
    tasks.add_task(events.append, "background ran")
    return {"queued": True}


@api.get("/fastapi/events")
async def read_events():
    return events


@api.get("/fastapi/missing")
async def missing():
    raise HTTPException(status_code=404, detail="no such thing")


@api.get("/fastapi/crash")
async def crash():
    raise RuntimeError("the app crashed")


@api.get("/fastapi/empty", status_code=204)
async def empty():
    return None


@api.websocket("/fastapi/ws")
async def ws_echo(ws: WebSocket):
    await ws.accept(subprotocol="chat" if "chat" in ws.scope["subprotocols"] else None)
    await ws.send_text("greeting: " + ws.scope["env"].GREETING)
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                events.append(f"ws disconnect {message.get('code')}")
                return
            if message.get("bytes") is not None:
                await ws.send_bytes(b"bytes=" + message["bytes"])
            elif message["text"] == "close":
                await ws.close(code=4001, reason="asked to close")
                return
            else:
                await ws.send_text("text=" + message["text"])
    except WebSocketDisconnect:
        return


@api.websocket("/fastapi/ws-refuse")
async def ws_refuse(ws: WebSocket):
    await ws.close(code=1008)


# ---------------------------------------------------------------- a plain Starlette app
async def hello(request):
    body = await request.body()
    return StarlettePlain(f"starlette {request.method} {request.url.path} {body.decode()}",
                          headers={"x-framework": "starlette"})


async def starlette_ws(websocket):
    await websocket.accept()
    text = await websocket.receive_text()
    await websocket.send_text(text.upper())
    await websocket.close()


star = Starlette(routes=[Route("/starlette/hello", hello, methods=["GET", "POST"]),
                         WebSocketRoute("/starlette/ws", starlette_ws)])


# ---------------------------------------------------------------- FastAPI inside a Durable Object
def counter_app(obj):
    app = FastAPI()

    @app.post("/object/{name}/add")
    async def add(name: str, req: Request):
        by = (await req.json())["by"]
        total = (await obj.ctx.storage.get("total") or 0) + by
        await obj.ctx.storage.put("total", total)
        return {"name": name, "total": total, "id_name": obj.ctx.id.name}

    @app.get("/object/{name}/total")
    async def total(name: str, req: Request):
        return {"total": await obj.ctx.storage.get("total") or 0, "env": req.scope["env"].GREETING}

    @app.websocket("/object/{name}/ws")
    async def ws(websocket: WebSocket, name: str):
        await websocket.accept()
        async for text in websocket.iter_text():
            total = (await obj.ctx.storage.get("total") or 0) + int(text)
            await obj.ctx.storage.put("total", total)
            await websocket.send_text(f"{name} total {total}")

    return app


class Counter(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        self.app = counter_app(self)

    async def fetch(self, request):
        if (request.headers.get("upgrade") or "").lower() == "websocket":
            return await asgi.websocket(self.app, request.js_object, self.env)
        return await asgi.fetch(self.app, request.js_object, self.env)


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        path = urlparse(request.url).path
        upgrade = (request.headers.get("upgrade") or "").lower() == "websocket"
        if path.startswith("/object/"):
            stub = self.env.COUNTER.getByName(path.split("/")[2])
            return await stub.fetch(request)
        if path.startswith("/starlette/"):
            if upgrade:
                return await asgi.websocket(star, request, self.env)
            return await asgi.fetch(star, request.js_object, self.env)
        if path.startswith("/fastapi/"):
            if upgrade:
                return await asgi.websocket(api, request, self.env)
            return await asgi.fetch(api, request.js_object, self.env, self.ctx)
        return Response("not found", status=404)
