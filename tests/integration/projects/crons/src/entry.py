from workers import DurableObject, Response, WorkerEntrypoint


class Log(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS runs(cron TEXT, at INTEGER, via TEXT)")

    async def add(self, cron, at, via):
        self.ctx.storage.sql.exec("INSERT INTO runs VALUES (?, ?, ?)", cron, at, via)

    async def runs(self):
        return [[r["cron"], r["at"], r["via"]] for r in self.ctx.storage.sql.exec("SELECT * FROM runs ORDER BY rowid")]


class Default(WorkerEntrypoint):
    async def scheduled(self, controller, env, ctx):
        log = env.LOG.getByName("log")
        if controller.cron == "15 * * * *":
            raise RuntimeError("the quarter-past job failed")
        await log.add(controller.cron, controller.scheduledTime, "handler")
        ctx.waitUntil(log.add(controller.cron, controller.scheduled_time, "wait_until"))

    async def fetch(self, request):
        return Response.json(await self.env.LOG.getByName("log").runs())
