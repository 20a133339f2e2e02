"""An object's named schedules in its own database: the hidden table ``_cf_SCHEDULES`` and, once it
exists, the user's own alarm time in ``_cf_METADATA`` key 4.

Every write joins the object's implicit transaction, like a KV put: a schedule is durable (and
acknowledged through the output gate) with the turn that made it, and rolled back with it. User SQL
cannot see or touch these rows (the ``_cf_`` rule); ``deleteAll()`` drops the table with the rest.

Once the table exists the object is in *schedule mode*: the alarm row (key 1) holds the earliest of
the user's alarm (key 4) and every schedule's wake time, and :mod:`duro.api.schedules` keeps it so.
The table is never dropped except by ``deleteAll()``, so the mode does not flip back and forth.
It never reads a clock or uses asyncio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.schedules import CatchUp, Kind, ScheduleRecord

if TYPE_CHECKING:
    from .database import ObjectDatabase

__all__ = ["SCHEDULES_TABLE", "ScheduleStore"]

SCHEDULES_TABLE = "_cf_SCHEDULES"
_CREATE = (
    "CREATE TABLE IF NOT EXISTS _cf_SCHEDULES (id TEXT PRIMARY KEY, method TEXT NOT NULL, "
    "payload BLOB NOT NULL, kind TEXT NOT NULL, cron TEXT, due_ms INTEGER NOT NULL, "
    "catch_up TEXT NOT NULL, rev INTEGER NOT NULL, retries INTEGER NOT NULL DEFAULT 0, "
    "retry_at_ms INTEGER, wake_ms INTEGER NOT NULL, missed_after_ms INTEGER NOT NULL)"
)
_INDEX = "CREATE INDEX IF NOT EXISTS _cf_SCHEDULES_wake ON _cf_SCHEDULES (wake_ms)"
_COLUMNS = "id, method, payload, kind, cron, due_ms, catch_up, rev, retries, retry_at_ms, missed_after_ms"
_GET = f"SELECT {_COLUMNS} FROM _cf_SCHEDULES WHERE id = ?"
_ALL = f"SELECT {_COLUMNS} FROM _cf_SCHEDULES ORDER BY wake_ms, id"
_DUE = f"SELECT {_COLUMNS} FROM _cf_SCHEDULES WHERE wake_ms <= ? ORDER BY wake_ms, id"
_PUT = (f"INSERT OR REPLACE INTO _cf_SCHEDULES ({_COLUMNS}, wake_ms) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_DELETE = "DELETE FROM _cf_SCHEDULES WHERE id = ?"
_EARLIEST = "SELECT min(wake_ms) FROM _cf_SCHEDULES"
_COUNT = "SELECT count(*) FROM _cf_SCHEDULES"
_USER_ALARM_GET = "SELECT value FROM _cf_METADATA WHERE key = 4"
_USER_ALARM_SET = "INSERT OR REPLACE INTO _cf_METADATA (key, value) VALUES (4, ?)"
_USER_ALARM_DELETE = "DELETE FROM _cf_METADATA WHERE key = 4"
_USER_RETRIES_GET = "SELECT value FROM _cf_METADATA WHERE key = 5"
_USER_RETRIES_SET = "INSERT OR REPLACE INTO _cf_METADATA (key, value) VALUES (5, ?)"
_USER_RETRIES_DELETE = "DELETE FROM _cf_METADATA WHERE key IN (5, 6)"
_USER_RETRY_AT_GET = "SELECT value FROM _cf_METADATA WHERE key = 6"
_USER_RETRY_AT_SET = "INSERT OR REPLACE INTO _cf_METADATA (key, value) VALUES (6, ?)"


def _record(row: tuple) -> ScheduleRecord:  # type: ignore[type-arg]
    id_, method, payload, kind, cron, due_ms, catch_up, rev, retries, retry_at_ms, missed_after_ms = row
    return ScheduleRecord(id_, method, bytes(payload), Kind(kind), cron, due_ms, CatchUp(catch_up), rev,
                          retries, retry_at_ms, missed_after_ms)


class ScheduleStore:
    """The schedules of one object's database (synchronous)."""

    def __init__(self, db: "ObjectDatabase") -> None:
        self._db = db

    @property
    def _port(self):  # type: ignore[no-untyped-def]
        return self._db.port

    def active(self) -> bool:
        """Whether the object is in schedule mode (the table exists). Never creates the file."""
        return self._port.readable(SCHEDULES_TABLE)

    def activate(self, user_alarm: int | None) -> None:
        """Enter schedule mode, moving the user's current alarm (``user_alarm``) to key 4."""
        port = self._port
        port.ensure_transaction()
        self._db.create_meta_table()
        port.run_internal(_CREATE, rows=False)
        port.run_internal(_INDEX, rows=False)
        port.memo[SCHEDULES_TABLE] = True
        self.set_user_alarm(user_alarm)

    # ---- schedules ----------------------------------------------------------------------------
    def get(self, schedule_id: str) -> ScheduleRecord | None:
        if not self.active():
            return None
        row = self._port.run_internal(_GET, (schedule_id,), first=True)
        return None if row is None else _record(row)

    def all(self) -> list[ScheduleRecord]:
        if not self.active():
            return []
        return [_record(r) for r in self._port.run_internal(_ALL)]

    def due(self, now_ms: int) -> list[ScheduleRecord]:
        if not self.active():
            return []
        return [_record(r) for r in self._port.run_internal(_DUE, (now_ms,))]

    def count(self) -> int:
        return self._port.run_internal(_COUNT)[0][0] if self.active() else 0

    def put(self, rec: ScheduleRecord) -> None:
        port = self._port
        port.ensure_transaction()
        port.run_internal(_PUT, (rec.id, rec.method, rec.payload, rec.kind.value, rec.cron, rec.due_ms,
                                 rec.catch_up.value, rec.rev, rec.retries, rec.retry_at_ms, rec.missed_after_ms,
                                 rec.wake_ms),
                          rows=False)

    def delete(self, schedule_id: str) -> bool:
        if not self.active():
            return False
        port = self._port
        port.ensure_transaction()
        port.run_internal(_DELETE, (schedule_id,), rows=False)
        return bool(port.run_internal("SELECT changes()")[0][0])

    def earliest_wake(self) -> int | None:
        if not self.active():
            return None
        return self._port.run_internal(_EARLIEST)[0][0]  # type: ignore[no-any-return]

    # ---- the user's own alarm (schedule mode) -------------------------------------------------
    def user_alarm(self) -> int | None:
        row = self._port.run_internal(_USER_ALARM_GET, first=True)
        return None if row is None else int(row[0])

    def set_user_alarm(self, when_ms: int | None, retries: int = 0, retry_at_ms: int | None = None) -> None:
        """Store (None: remove) the user's alarm, the retries its ``alarm()`` has used (key 5) and
        when the next retry is due (key 6)."""
        port = self._port
        port.ensure_transaction()
        if when_ms is None:
            port.run_internal(_USER_ALARM_DELETE, rows=False)
        else:
            port.run_internal(_USER_ALARM_SET, (int(when_ms),), rows=False)
        if retries:
            port.run_internal(_USER_RETRIES_SET, (retries,), rows=False)
            port.run_internal(_USER_RETRY_AT_SET, (int(retry_at_ms or 0),), rows=False)
        else:
            port.run_internal(_USER_RETRIES_DELETE, rows=False)

    def user_wake(self) -> int | None:
        """When the user's alarm needs the object: its time, or its retry's."""
        when = self.user_alarm()
        if when is None:
            return None
        row = self._port.run_internal(_USER_RETRY_AT_GET, first=True)
        return when if row is None else int(row[0])

    def user_retries(self) -> int:
        row = self._port.run_internal(_USER_RETRIES_GET, first=True)
        return 0 if row is None else int(row[0])
