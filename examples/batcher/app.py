"""Batch writes with an alarm: requests are queued in the object's storage, and one ``alarm()``
flushes everything queued so far as a single batch.

    POST /batches/<name>     queue the request body; the first item of a batch sets the alarm
    GET  /batches/<name>     {"pending": n, "flush_at": ms or null, "batches": [...]}

A batch is flushed FLUSH_AFTER_MS (a var, 500 ms by default) after its first item arrived. Here
"flushing" writes the batch into a SQL table; a real app would send it somewhere (an upstream API,
a log store) - if that fails, alarm() raises and duro retries it with backoff, the queue intact.
"""

import json
import time

from duro import DurableObject, Response, WorkerEntrypoint


class Batcher(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        self.flush_after_ms = int(env.FLUSH_AFTER_MS)
        ctx.storage.sql.exec(
            "CREATE TABLE IF NOT EXISTS queue (seq INTEGER PRIMARY KEY AUTOINCREMENT, item TEXT NOT NULL)")
        ctx.storage.sql.exec(
            "CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "flushed_at INTEGER NOT NULL, items TEXT NOT NULL)")

    async def add(self, item: str) -> int:
        """Queue one item; returns how many are waiting. The queue write and the alarm write join
        one transaction, so an item is never queued without a flush being due."""
        self.ctx.storage.sql.exec("INSERT INTO queue (item) VALUES (?)", item)
        if await self.ctx.storage.get_alarm() is None:
            await self.ctx.storage.set_alarm(time.time_ns() // 1_000_000 + self.flush_after_ms)
        return self.ctx.storage.sql.exec("SELECT count(*) AS n FROM queue").one()["n"]

    async def alarm(self, alarm_info=None):
        rows = self.ctx.storage.sql.exec("SELECT seq, item FROM queue ORDER BY seq").to_array()
        if not rows:
            return
        items = [r["item"] for r in rows]
        # Everything below is one implicit transaction: the batch appears and the queue empties
        # together. If this raised instead, nothing would change and the alarm would be retried.
        self.ctx.storage.sql.exec("INSERT INTO batches (flushed_at, items) VALUES (?, ?)",
                                  time.time_ns() // 1_000_000, json.dumps(items))
        self.ctx.storage.sql.exec("DELETE FROM queue WHERE seq <= ?", rows[-1]["seq"])

    async def status(self) -> dict:
        pending = self.ctx.storage.sql.exec("SELECT count(*) AS n FROM queue").one()["n"]
        batches = [{"id": r["id"], "flushed_at": r["flushed_at"], "items": json.loads(r["items"])}
                   for r in self.ctx.storage.sql.exec("SELECT * FROM batches ORDER BY id")]
        return {"pending": pending, "flush_at": await self.ctx.storage.get_alarm(), "batches": batches}


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        parts = request.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] != "batches" or not parts[1]:
            return Response("try POST /batches/<name>", status=404)
        batcher = self.env.BATCHER.get_by_name(parts[1])
        if request.method == "POST":
            return Response.json({"pending": await batcher.add(await request.text())}, status=202)
        return Response.json(await batcher.status())
