"""``cursor.rows_read`` / ``rows_written`` of one user statement, counted the way Cloudflare counts.

workerd builds SQLite with libsql's two statement counters: *rows read* goes up for every b-tree row
a cursor of the statement lands on (the first row of a scan, each step of it, each successful seek),
*rows written* for every row inserted, updated or deleted and every index entry inserted. Stock
SQLite (apsw) has neither, so this module rebuilds them, for the last statement of an ``exec()``
(Cloudflare's cursor counts that one only), from what SQLite does expose:

* writes: the pre-update hook sees every row change (triggers' too); each counts 1, plus one per
  index entry SQLite must insert for it — every index of the table for an INSERT, the indexes
  over a changed column for an UPDATE (all of them when the rowid changes), none for a DELETE. A
  row REPLACE deletes to make room is not counted, as on Cloudflare.
* reads: SQLite's full-scan step counter (``SQLITE_STMTSTATUS_FULLSCAN_STEP``, from the profile
  trace) plus one per table or index scanned; for a statement that seeks through an index or the rowid,
  the rows it returned (or changed, for an UPDATE or DELETE). ``DELETE FROM t`` without a WHERE
  reads nothing (SQLite clears the table).

Measured against workerd, this is exact for single-table reads and writes, joins of a scan with a
lookup, LIMIT, ORDER BY, and UPSERT; it differs for ``count(*)`` (Cloudflare counts the rows
counted), ``IN (...)`` lists and subqueries (their temporary tables), ``RETURNING``, an UPDATE that
sets a column to the value it had (Cloudflare still rewrites its indexes) and schema statements
(Cloudflare counts its own schema-table rows; here they count 0). docs/cloudflare.md lists these.

It only reads SQLite's schema (through the connection's internal path) and never writes.
"""

from __future__ import annotations

import itertools
import re
from operator import is_not
from typing import Any, Callable

import apsw

__all__ = ["RowCounter"]

_NO_CHANGES = itertools.repeat(apsw.no_change)
_FULLSCAN = "SQLITE_STMTSTATUS_FULLSCAN_STEP"
_PROFILE = apsw.SQLITE_TRACE_PROFILE
_KEYWORD = re.compile(r"(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*(\w+)", re.S)
_TRUNCATE = re.compile(r"\s*DELETE\s+FROM\s+(?:\"[^\"]+\"|`[^`]+`|\[[^\]]+\]|[\w.]+)\s*;?\s*\Z", re.I)
_CACHE_SIZE = 256
_HOOK, _TRACE = 1, 2  # what start() switched on
# Plan lines that scan no table: constants, VALUES lists, subqueries and CTEs.
_NOT_A_TABLE = re.compile(r"^SCAN (?:CONSTANT ROW|\d+-ROW VALUES CLAUSE|\(|.*\bCONSTANT ROW)")

# What the plan of one statement tells the counter: its first keyword, how many tables it scans in
# full, whether it seeks (an index or the rowid), whether it sorts in a temporary b-tree, whether
# it has RETURNING, and whether it is a table-clearing DELETE.
_Plan = tuple[str, int, bool, bool, bool, bool]
# What the counter knows of a table: whether it is WITHOUT ROWID, the column numbers of each index
# whose entries are written besides the row (None for an index on an expression), and the columns
# of a WITHOUT ROWID table's primary key (changing one moves the row: every index is rewritten).
_Table = tuple[bool, tuple["frozenset[int] | None", ...], frozenset[int]]
_RETURNING = re.compile(r"\bRETURNING\b", re.I)

Internal = Callable[..., Any]  # the connection's ``run_internal``: duro's own statements


class RowCounter:
    """Counts for one connection. ``start(conn)`` before the statement runs, ``finish(...)`` after
    it ran to its end; schema caches are dropped by ``forget_schema()`` (and on a user DDL)."""

    __slots__ = ("_run", "_events", "_fullscan", "_indexes", "_plans", "_costs", "_inserting", "_watching",
                 "_starts", "_hook", "_tracer")

    def __init__(self, run_internal: Internal) -> None:
        self._run = run_internal
        self._events: dict[tuple[str, str, Any], int] = {}
        self._fullscan = 0
        self._indexes: dict[str, _Table] = {}
        self._plans: dict[str, _Plan] = {}
        # What start() switches on for a statement whose plan is known: (inserting, watching).
        self._starts: dict[str, tuple[bool, int]] = {}
        self._costs: dict[tuple[str, str, Any], tuple[int, bool, bool]] = {}
        self._inserting = False
        self._watching = 0
        # SQLite's callbacks, bound once (a bound method made per statement costs an allocation).
        self._hook = self._on_change
        self._tracer = self._on_profile

    def forget_schema(self) -> None:
        self._indexes.clear()
        self._plans.clear()
        self._starts.clear()
        self._costs.clear()

    # ---- around the statement -----------------------------------------------------------------
    def start(self, conn: apsw.Connection, sql: str) -> None:
        """Watch the statement ``sql`` about to run. Only what its plan (known after its first
        run) needs is switched on: each costs a microsecond or two per statement."""
        self._events.clear()
        self._fullscan = 0
        how = self._starts.get(sql)
        if how is None:  # its first run: its plan is read after it
            how = (_keyword(sql) in ("INSERT", "REPLACE"), _HOOK | _TRACE)
        self._inserting, watching = how
        self._watching = watching
        if watching & _HOOK:
            conn.preupdate_hook(self._hook)
        if watching & _TRACE:
            conn.trace_v2(_PROFILE, self._tracer)

    def stop(self, conn: apsw.Connection) -> None:
        if self._watching & _HOOK:
            conn.preupdate_hook(None)
        if self._watching & _TRACE:
            conn.trace_v2(0, None)

    def finish(self, sql: str, bindings: Any, returned: int) -> tuple[int, int]:
        """``(rows_read, rows_written)`` of the statement that just ran (after ``stop``)."""
        plan = self._plans.get(sql)
        if plan is None:
            plan = self._plan(sql, bindings)
        keyword, scans, seeks, sorts, returning, truncate = plan
        if keyword in ("CREATE", "DROP", "ALTER"):
            self.forget_schema()
            return 0, 0
        written = 0
        changed = 0
        upserted = 0  # rows of rowid tables an UPSERT updated: it seeks each one by its rowid
        costs = self._costs
        for key, n in self._events.items():
            cost = costs.get(key)
            if cost is None:
                cost = costs[key] = self._cost(*key)
            entries, is_change, rowid_update = cost
            written += n * entries
            if is_change:
                changed += n
                upserted += n * rowid_update
        if truncate:
            return 0, written
        read = self._fullscan + scans
        if keyword in ("SELECT", "WITH", "VALUES"):
            if seeks:
                read += returned
            if sorts:  # the rows go through a temporary b-tree, and are read back from it
                read += returned if seeks or not scans else self._fullscan + scans
        elif keyword in ("UPDATE", "DELETE"):
            if seeks:
                read += changed
        else:  # INSERT: conflict checks are not counted
            read += upserted
        if returning and keyword not in ("SELECT", "WITH", "VALUES"):
            read += returned  # RETURNING reads its rows back from a temporary table
        return read, written

    # ---- SQLite's callbacks -------------------------------------------------------------------
    def _on_change(self, u: Any) -> None:
        op = u.op
        if op == "UPDATE":
            key = ("U", u.table_name, None if u.rowid != u.rowid_new else
                   tuple(map(is_not, u.update, _NO_CHANGES)))
        elif op == "INSERT":
            key = ("I", u.table_name, None)
        else:
            key = ("R" if self._inserting and u.depth == 0 else "D", u.table_name, None)
        events = self._events
        events[key] = events.get(key, 0) + 1

    def _on_profile(self, event: dict[str, Any]) -> None:
        status = event.get("stmt_status")
        if status:
            self._fullscan = status.get(_FULLSCAN, 0)  # the last statement to finish is ours

    # ---- schema -------------------------------------------------------------------------------
    def _cost(self, op: str, table: str, mask: tuple[bool, ...] | None) -> tuple[int, bool, bool]:
        """For one kind of row change: the rows and index entries it writes, whether it changed a
        row of the table, and whether it is an update of a rowid table's row."""
        if op == "R":  # a row REPLACE removed: not counted
            return 0, False, False
        if op == "I":
            return 1 + self._index_entries(op, table, mask), False, False
        return 1 + self._index_entries(op, table, mask), True, op == "U" and not self._table(table)[0]

    def _index_entries(self, op: str, table: str, mask: tuple[bool, ...] | None) -> int:
        if op == "D":
            return 0
        _, indexes, pk = self._table(table)
        if op == "I" or mask is None or any(i < len(mask) and mask[i] for i in pk):
            return len(indexes)
        n = 0
        for columns in indexes:
            if columns is None:  # an index on an expression: rewritten when anything changed
                if any(mask):
                    n += 1
            elif any(i < len(mask) and mask[i] for i in columns):
                n += 1
        return n

    def _table(self, table: str) -> _Table:
        info = self._indexes.get(table)
        if info is None:
            info = self._indexes[table] = self._read_table(table)
        return info

    def _read_table(self, table: str) -> _Table:
        rows = self._run("SELECT wr FROM pragma_table_list WHERE name = ?", (table,), cache=False)
        without_rowid = bool(rows and rows[0][0])
        indexes: list[frozenset[int] | None] = []
        pk: frozenset[int] = frozenset()
        for name, origin in self._run("SELECT name, origin FROM pragma_index_list(?)", (table,), cache=False):
            cids = [r[0] for r in self._run("SELECT cid FROM pragma_index_info(?)", (name,), cache=False)]
            if without_rowid and origin == "pk":  # the primary key is the row itself
                pk = frozenset(cids)
                continue
            indexes.append(None if any(c < 0 for c in cids) else frozenset(cids))
        return without_rowid, tuple(indexes), pk

    def _plan(self, sql: str, bindings: Any) -> _Plan:
        keyword = _keyword(sql)
        scans = 0
        seeks = sorts = False
        if keyword not in ("CREATE", "DROP", "ALTER", "PRAGMA"):
            try:
                details = [row[3] for row in self._run("EXPLAIN QUERY PLAN " + sql, bindings or None, cache=False)]
            except Exception:  # noqa: BLE001 - a plan is only for counting; none means no reads
                details = []
            for d in details:
                if d.startswith("SEARCH "):
                    seeks = True
                elif d.startswith("SCAN ") and not _NOT_A_TABLE.search(d):
                    scans += 1
                elif d.startswith("USE TEMP B-TREE"):
                    sorts = True
        plan = (keyword, scans, seeks, sorts, _RETURNING.search(sql) is not None,
                keyword == "DELETE" and _TRUNCATE.match(sql) is not None)
        if len(self._plans) >= _CACHE_SIZE:
            self._plans.clear()
            self._starts.clear()
        self._plans[sql] = plan
        self._starts[sql] = (keyword in ("INSERT", "REPLACE"),
                             (0 if keyword in ("SELECT", "VALUES") else _HOOK) |
                             (_TRACE if scans or (sorts and not seeks) else 0))
        return plan


def _keyword(sql: str) -> str:
    m = _KEYWORD.match(sql)
    return m.group(1).upper() if m else ""
