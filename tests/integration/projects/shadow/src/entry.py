from workers import DurableObject, Response, WorkerEntrypoint

import helpers  # the project's own sibling module still imports


class Notes(DurableObject):
    async def add(self, text):
        self.ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS n(t TEXT)")
        self.ctx.storage.sql.exec("INSERT INTO n VALUES (?)", text)
        return [r["t"] for r in self.ctx.storage.sql.exec("SELECT t FROM n")]


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        notes = await self.env.NOTES.getByName("x").add(helpers.greet("notes"))
        return Response.json(notes)
