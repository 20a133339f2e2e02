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

    async def background(self, seconds):
        self.ctx.waitUntil(asyncio.sleep(seconds))

    async def call_slow(self, name, seconds):
        self.env.OTHER.getByName(name).nap(seconds)  # not awaited: pending I/O of this object


class Other(DurableObject):
    async def nap(self, seconds):
        await asyncio.sleep(seconds)

    async def snapshot(self):
        self.ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS t (x)")
        self.ctx.storage.sql.exec("INSERT INTO t VALUES ('from other')")
        return await self.ctx.storage.snapshot()


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        return Response("ok")
