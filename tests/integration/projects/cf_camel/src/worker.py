import js
from pyodide.ffi import to_js
from workers import DurableObject, Response, WorkerEntrypoint


class Store(DurableObject):
    def __init__(self, state, env):
        super().__init__(state, env)
        self.state = state

        @self.ctx.blockConcurrencyWhile
        async def initialize():
            self.started = js.Date.now()

    async def kv_roundtrip(self):
        s = self.ctx.storage
        await s.put({"a": 1, "b": 2, "c": 3})
        got = await s.get(["a", "c", "zz"])
        listed = await s.list(startAfter="a", limit=1)
        rev = await s.list(reverse=True, limit=1)
        deleted = await s.delete(["a", "b"])
        s.kv.put("sync", "yes")
        return {"got": got.to_py(), "listed": dict(listed), "rev": list(rev.keys()), "deleted": deleted,
                "sync": s.kv.get("sync")}

    async def sql_roundtrip(self):
        sql = self.ctx.storage.sql
        sql.exec("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, name TEXT)")
        sql.exec("INSERT INTO t (name) VALUES (?), (?)", "x", "y")
        cur = sql.exec("SELECT id, name FROM t ORDER BY id")
        rows = cur.toArray()
        raw = sql.exec("SELECT name FROM t ORDER BY id").raw().toArray()
        one = sql.exec("SELECT count(*) AS n FROM t").one()
        return {"rows": [dict(r) for r in rows], "cols": cur.columnNames, "raw": raw, "n": one.n,
                "read": cur.rowsRead, "size": sql.databaseSize > 0,
                "txn": self.ctx.storage.transactionSync(lambda: "inside")}

    async def who(self):
        return {"id": self.ctx.id.toString(), "name": self.ctx.id.name, "started": self.started > 0,
                "greeting": self.env.GREETING}

    async def wipe(self):
        await self.ctx.storage.deleteAll()
        return await self.ctx.storage.get("c")


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        ns = self.env.STORE
        stub = ns.get(ns.idFromName("one"))
        same = ns.idFromString(ns.idFromName("one").toString())
        assert same.equals(ns.idFromName("one")) and same.name is None
        unique = ns.newUniqueId()
        by_name = ns.getByName("one")
        result = {
            "kv": await stub.kv_roundtrip(),
            "sql": await by_name.sql_roundtrip(),
            "who": await stub.who(),
            "unique_name": unique.name,
            "wipe": await stub.wipe(),
        }
        return Response.json(to_js(result))
