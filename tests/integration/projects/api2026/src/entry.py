import asyncio

from workers import DurableObject, Response, WorkerEntrypoint


class Notes(DurableObject):
    """Stores notes; knows who it is; can snapshot itself and be restored from a snapshot."""

    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS notes (body TEXT)")

    async def whoami(self):
        return {"id": str(self.ctx.id), "name": self.ctx.id.name, "jurisdiction": self.ctx.id.jurisdiction}

    async def add(self, body):
        self.ctx.storage.sql.exec("INSERT INTO notes VALUES (?)", body)
        await self.ctx.storage.put("last", body)

    async def notes(self):
        return [r["body"] for r in self.ctx.storage.sql.exec("SELECT body FROM notes ORDER BY rowid")]

    async def last(self):
        return await self.ctx.storage.get("last")

    async def arm(self, ms):
        await self.ctx.storage.setAlarm(ms)

    async def alarm(self, info=None):
        await self.ctx.storage.put("alarm_saw", {"jurisdiction": self.ctx.id.jurisdiction, "name": self.ctx.id.name})

    async def alarm_saw(self):
        return await self.ctx.storage.get("alarm_saw")

    async def snapshot(self, bookmark=None):
        return await self.ctx.storage.snapshot(bookmark)

    async def bookmark(self):
        return await self.ctx.storage.getCurrentBookmark()

    async def store_snapshot(self):
        snap = await self.ctx.storage.snapshot()
        await self.ctx.storage.put("snap", snap)

    async def restore_from(self, snap):
        undo = await self.ctx.onNextSessionRestore(snap)
        await self.ctx.storage.put("undo", undo)  # lost with the restore: the snapshot replaces it
        self.ctx.abort("restoring from a snapshot")

    async def restore_and_tell(self, snap, keeper):
        undo = await self.ctx.onNextSessionRestore(snap)
        await self.env.NOTES.getByName(keeper).remember(undo)
        self.ctx.abort("restoring from a snapshot")

    async def remember(self, value):
        await self.ctx.storage.put("remembered", value)

    async def remembered(self):
        return await self.ctx.storage.get("remembered")

    async def undo_to(self, bookmark):
        await self.ctx.storage.onNextSessionRestoreBookmark(bookmark)
        self.ctx.abort("undoing a restore")

    def _facet(self, name):
        return self.ctx.facets.get(name, lambda: {"class": Child})

    async def facet_add(self, name, body):
        await self._facet(name).add(body)

    async def facet_items(self, name):
        return await self._facet(name).items()

    async def facet_call(self, name, method, *args):
        return await getattr(self._facet(name), method)(*args)

    async def facet_fetch(self, name):
        resp = await self._facet(name).fetch("http://facet/hello")
        return await resp.text()

    async def facet_abort_keeps_stub(self, name, reason):
        stub = self._facet(name)
        await stub.items()
        self.ctx.facets.abort(name, reason)
        try:
            await stub.items()
        except Exception as e:
            return str(e)
        return "no error"

    async def facet_delete(self, name):
        stub = self._facet(name)
        await stub.items()
        await self.ctx.facets.delete(name)
        try:
            await stub.items()
        except Exception as e:
            return str(e)
        return "no error"

    async def facet_clone(self, src, dst):
        await self.ctx.facets.clone(src, dst)

    async def facet_via_exports(self, name, cls_name, method):
        from js import Object
        from pyodide.ffi import to_js

        def options():
            return to_js({"class": getattr(self.ctx.exports, cls_name)}, dict_converter=Object.fromEntries)
        return await getattr(self.ctx.facets.get(name, options), method)()

    async def exports_missing(self):
        return self.ctx.exports.Default

    async def facet_stub(self, name):
        return self._facet(name)

    async def facet_long_name(self):
        self.ctx.facets.get("x" * 257, lambda: {"class": Child})

    async def background(self, seconds):
        self.ctx.waitUntil(asyncio.sleep(seconds))

    async def call_slow(self, name, seconds):
        self.env.OTHER.getByName(name).nap(seconds)  # not awaited: pending I/O of this object


class Child(DurableObject):
    """A facet: its own SQLite inside a Notes object."""

    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS items (body TEXT)")

    async def add(self, body):
        self.ctx.storage.sql.exec("INSERT INTO items VALUES (?)", body)

    async def items(self):
        return [r["body"] for r in self.ctx.storage.sql.exec("SELECT body FROM items ORDER BY rowid")]

    async def tables(self):
        return sorted(r["name"] for r in self.ctx.storage.sql.exec(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_cf%' ESCAPE '\\'"))

    async def whoami(self):
        return {"id": str(self.ctx.id), "name": self.ctx.id.name}

    async def arm(self):
        await self.ctx.storage.setAlarm(10_000_000_000_000)

    async def background(self, seconds):
        self.ctx.waitUntil(asyncio.sleep(seconds))

    async def hibernate_socket(self):
        from duro import WebSocketPair
        client, server = WebSocketPair.new().object_values()
        self.ctx.acceptWebSocket(server)

    async def alarm(self):
        pass

    async def nest(self, depth):
        """Open a chain of facets ``depth`` levels below this one; return the deepest's items."""
        if depth == 0:
            return await self.items()
        child = self.ctx.facets.get("inner", lambda: {"class": Child})
        return await child.nest(depth - 1)

    async def fetch(self, request):
        return Response(f"facet {request.url}")


class Other(DurableObject):
    async def nap(self, seconds):
        await asyncio.sleep(seconds)

    async def snapshot(self):
        self.ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS t (x)")
        self.ctx.storage.sql.exec("INSERT INTO t VALUES ('from other')")
        return await self.ctx.storage.snapshot()


class Default(WorkerEntrypoint):
    """HTTP routes for the server tests:
    POST /notes/<name>?body=B, GET /notes/<name>; POST /facet/<parent>/<facet>?body=B,
    GET /facet/<parent>/<facet>; POST /fork/<src>/<dst> (dst starts over a snapshot of src)."""

    async def fetch(self, request):
        from urllib.parse import parse_qs, urlsplit
        url = urlsplit(request.url)
        parts = url.path.strip("/").split("/")
        body = parse_qs(url.query).get("body", [""])[0]
        notes = self.env.NOTES
        if parts[0] == "notes":
            stub = notes.getByName(parts[1])
            if request.method == "POST":
                await stub.add(body)
                return Response("ok")
            return Response.json(await stub.notes())
        if parts[0] == "facet":
            stub = notes.getByName(parts[1])
            if request.method == "POST":
                await stub.facet_add(parts[2], body)
                return Response("ok")
            return Response.json(await stub.facet_items(parts[2]))
        if parts[0] == "fork":
            snap = await notes.getByName(parts[1]).snapshot()
            try:
                await notes.getByName(parts[2]).restore_from(snap)
            except Exception as e:
                if str(e) != "restoring from a snapshot":
                    raise
            return Response.json(await notes.getByName(parts[2]).notes())
        return Response("not found", status=404)
