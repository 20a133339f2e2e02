"""An object that writes KV, SQL and its alarm, and restores itself to a bookmark."""

from duro import DurableObject


class Notes(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT)")

    async def add(self, text: str) -> str:
        self.ctx.storage.sql.exec("INSERT INTO notes (text) VALUES (?)", text)
        await self.ctx.storage.put("last", text)
        return await self.ctx.storage.getCurrentBookmark()

    async def set_alarm(self, when: int) -> None:
        await self.ctx.storage.set_alarm(when)

    async def alarm(self, info=None) -> None:
        await self.ctx.storage.put("alarm_fired", True)

    async def state(self) -> dict:
        rows = [r["text"] for r in self.ctx.storage.sql.exec("SELECT text FROM notes ORDER BY id")]
        return {"notes": rows, "last": await self.ctx.storage.get("last"),
                "alarm": await self.ctx.storage.get_alarm(), "fired": await self.ctx.storage.get("alarm_fired")}

    async def bookmark(self) -> str:
        return await self.ctx.storage.get_current_bookmark()

    async def bookmark_for_time(self, t) -> str:
        return await self.ctx.storage.get_bookmark_for_time(t)

    async def restore(self, bookmark: str, abort: bool = True) -> str:
        undo = await self.ctx.storage.on_next_session_restore_bookmark(bookmark)
        if abort:
            self.ctx.abort("restoring")
        return undo

    async def schedule_only(self, bookmark: str) -> str:
        return await self.ctx.storage.onNextSessionRestoreBookmark(bookmark)

    async def do_abort(self) -> None:
        self.ctx.abort("restart for restore")
