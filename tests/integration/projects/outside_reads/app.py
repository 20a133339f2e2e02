"""For tests/integration/test_outside_reads.py: an object whose every commit moves an amount
between two rows (their sum never changes) and rewrites a large blob, so that its WAL fills, is
checkpointed into the file and starts over again and again while a reader from outside reads."""

from duro import DurableObject

TOTAL = 1000


class Ledger(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        sql = ctx.storage.sql
        sql.exec("CREATE TABLE IF NOT EXISTS acct (k INTEGER PRIMARY KEY, v INTEGER NOT NULL, pad BLOB)")
        if not sql.exec("SELECT count(*) AS n FROM acct").one()["n"]:
            sql.exec("INSERT INTO acct (k, v) VALUES (1, ?), (2, 0)", TOTAL)

    async def churn(self, commits):
        for i in range(commits):
            self.ctx.storage.sql.exec("UPDATE acct SET v = v - 1, pad = randomblob(200000) WHERE k = 1")
            self.ctx.storage.sql.exec("UPDATE acct SET v = v + 1, pad = randomblob(200000) WHERE k = 2")
            await self.ctx.storage.sync()  # one commit: its own turn
        return commits
