"""The power-cut test's application: each POST adds 1 to the object's counter, sets its alarm to a
far-future time that encodes the new value, and answers with the value and the bookmark of that
state — three things a power cut must not take once they were acknowledged.

    POST /w/<name>                      {"value", "bookmark"}
    GET  /r/<name>                      {"value", "alarm"}
    GET  /b/<name>?b=<bookmark>         200 if the bookmark still names a point in the history
"""

from duro import DurableObject, Response, WorkerEntrypoint

ALARM_BASE = 4_000_000_000_000  # year 2096: never fires during the test


class Ledger(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS n (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)")

    async def write(self) -> dict:
        v = self.ctx.storage.sql.exec(
            "INSERT INTO n VALUES (1, 1) ON CONFLICT(k) DO UPDATE SET v = v + 1 RETURNING v").one()["v"]
        await self.ctx.storage.set_alarm(ALARM_BASE + v)
        return {"value": v, "bookmark": await self.ctx.storage.get_current_bookmark()}

    async def alarm(self) -> None:  # never due during the test; a class that sets alarms has one
        pass

    async def read(self) -> dict:
        rows = self.ctx.storage.sql.exec("SELECT v FROM n").to_array()
        return {"value": rows[0]["v"] if rows else 0, "alarm": await self.ctx.storage.get_alarm()}

    async def has_bookmark(self, bookmark: str) -> bool:
        # Resolving it is the test; the restore it schedules would run only at the next session.
        await self.ctx.storage.on_next_session_restore_bookmark(bookmark)
        return True


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        kind, _, name = request.path.strip("/").partition("/")
        obj = self.env.LEDGER.get_by_name(name)
        if kind == "w" and request.method == "POST":
            try:
                return Response.json(await obj.write())
            except Exception as e:  # noqa: BLE001 - a refused write answers with why
                return Response(f"{type(e).__name__}: {e}", status=503)
        if kind == "r":
            return Response.json(await obj.read())
        if kind == "b":
            try:
                await obj.has_bookmark(request.query.removeprefix("b="))
            except Exception as e:  # noqa: BLE001 - the answer is the error's text
                return Response(str(e), status=404)
            return Response("ok")
        return Response("not found", status=404)
