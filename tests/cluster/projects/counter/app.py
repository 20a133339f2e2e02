"""Objects for tests/cluster/test_serve_cluster.py (duro serve --cluster). ``add`` keeps an
in-memory count beside the stored one: two live instances of one object (two owners) would make
them differ. Every answer names the node that ran the object. The entrypoint answers 503 for a
retryable error, as a client-facing Worker on Cloudflare would (``e.retryable``)."""

import json
import os

from duro import DurableObject, Response, WorkerEntrypoint

NODE = os.environ.get("DURO_TEST_NODE", str(os.getpid()))


class Counter(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        self.mem = None
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")

    def _stored(self):
        rows = self.ctx.storage.sql.exec("SELECT v FROM t WHERE k = 'n'").to_array()
        return rows[0]["v"] if rows else 0

    async def add(self):
        if self.mem is None:
            self.mem = self._stored()  # a new instance starts from what is stored
        self.mem += 1
        stored = self.ctx.storage.sql.exec(
            "INSERT INTO t (k, v) VALUES ('n', 1) ON CONFLICT(k) DO UPDATE SET v = v + 1 RETURNING v").one()["v"]
        return {"mem": self.mem, "stored": stored, "node": NODE}

    async def slow_add(self, ms):
        import asyncio
        await asyncio.sleep(ms / 1000)  # a write that comes late: after the node was stopped and resumed
        return await self.add()

    async def blob(self, kb):
        # kb KiB in rows of 512 KiB, all in one commit (no await between the statements).
        self.ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS b (i INTEGER PRIMARY KEY, v BLOB)")
        for _ in range(kb // 512):
            self.ctx.storage.sql.exec("INSERT INTO b (v) VALUES (randomblob(524288))")
        n = self.ctx.storage.sql.exec("SELECT count(*) AS n, total(length(v)) AS size FROM b").one()
        return {"rows": n["n"], "bytes": int(n["size"]), "node": NODE}

    async def note(self):
        # A row in a table of its own (its own pages): a restore that drops it must be in the log,
        # later commits to the counter do not rewrite its pages.
        self.ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS notes (i INTEGER PRIMARY KEY, node TEXT)")
        self.ctx.storage.sql.exec("INSERT INTO notes (node) VALUES (?)", NODE)
        return {"notes": self._notes(), "node": NODE}

    def _notes(self):
        if not self.ctx.storage.sql.exec("SELECT 1 FROM sqlite_master WHERE name = 'notes'").to_array():
            return 0
        return self.ctx.storage.sql.exec("SELECT count(*) AS n FROM notes").one()["n"]

    async def bookmark(self):
        return {"bookmark": await self.ctx.storage.getCurrentBookmark(), "stored": self._stored(), "node": NODE}

    async def bookmark_at(self, ms):
        return {"bookmark": await self.ctx.storage.getBookmarkForTime(ms), "node": NODE}

    async def restore(self, bookmark):
        # Point-in-time recovery as Cloudflare's docs show it: schedule, then restart the object.
        undo = await self.ctx.storage.onNextSessionRestoreBookmark(bookmark)
        return {"undo": undo, "node": NODE}

    async def abort(self):
        self.ctx.abort("restart to restore")

    async def facet(self):
        try:
            self.ctx.facets.get("f", lambda: {"class": Counter})
        except Exception as e:
            return {"refused": str(e), "node": NODE}
        return {"refused": None, "node": NODE}

    async def get(self):
        self.ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS f (k TEXT PRIMARY KEY, node TEXT)")
        by = self.ctx.storage.sql.exec("SELECT node FROM f WHERE k = 'by'").to_array()
        return {"stored": self._stored(), "node": NODE, "fired_by": by[0]["node"] if by else None,
                "notes": self._notes()}

    async def alarm_in(self, ms):
        import time
        await self.ctx.storage.set_alarm(time.time() * 1000 + ms)
        return {"node": NODE}

    async def alarm(self):
        self.ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS f (k TEXT PRIMARY KEY, node TEXT)")
        self.ctx.storage.sql.exec("INSERT INTO t (k, v) VALUES ('fired', 1) ON CONFLICT(k) DO UPDATE SET v = v + 1")
        self.ctx.storage.sql.exec("INSERT OR REPLACE INTO f (k, node) VALUES ('by', ?)", NODE)

    async def fetch(self, request):
        return Response(json.dumps({"stored": self._stored(), "node": NODE}), headers={"content-type": "application/json"})


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        parts = request.url.split("?")[0].split("/")
        verb, name = parts[3], parts[4]
        stub = self.env.COUNTER.get(self.env.COUNTER.id_from_name(name))
        try:
            if verb == "add":
                out = {**await stub.add(), "name": name}
            elif verb == "slow_add":
                out = await stub.slow_add(int(parts[5]))
            elif verb == "alarm_in":
                out = await stub.alarm_in(int(parts[5]))
            elif verb == "blob":
                out = await stub.blob(int(parts[5]))
            elif verb == "facet":
                out = await stub.facet()
            elif verb == "note":
                out = await stub.note()
            elif verb == "bookmark":
                out = await stub.bookmark()
            elif verb == "bookmark_at":
                out = await stub.bookmark_at(int(parts[5]))
            elif verb == "restore":
                out = await stub.restore(parts[5])
                try:
                    await stub.abort()
                except Exception as e:  # the abort's own error: the object restarts (and restores)
                    out["aborted"] = type(e).__name__
            elif verb == "get":
                out = await stub.get()
            elif verb == "fetch":
                return await stub.fetch("http://o/")
            elif verb == "node":
                return Response(NODE)
            else:
                return Response("unknown", status=404)
        except Exception as e:
            retry = bool(getattr(e, "retryable", False))
            return Response(json.dumps({"error": f"{type(e).__name__}: {e}", "retryable": retry}),
                            status=503 if retry else 500,
                            headers={"content-type": "application/json", **({"retry-after": "1"} if retry else {})})
        return Response(json.dumps(out), headers={"content-type": "application/json"})
