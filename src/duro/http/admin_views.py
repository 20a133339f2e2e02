"""The admin API's reading operations, for the dashboard: the namespaces, a search over stored
objects, one object's tables and KV keys, a read-only SQL console, its bookmark range, and the
open sockets. They read database files through read-only connections (never the instance's own)
and change nothing: no reset, no write, no file created.
"""

from __future__ import annotations

import base64
import datetime
import os
import pathlib
from typing import Any, Callable

import apsw

from ..errors import InvalidInputError, StorageError
from ..storage import maintenance
from ..storage.historyfile import parse_bookmark

__all__ = ["namespaces", "objects", "object_detail", "query", "sockets", "MAX_ROWS", "MAX_OBJECTS"]

MAX_ROWS = 1000  # rows the SQL console returns (it says when there were more)
MAX_OBJECTS = 500  # objects one search returns (it says when there were more)
MAX_KV_KEYS = 100  # KV keys shown on an object's page
_HEX64 = frozenset("0123456789abcdef")


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    t = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def cell(value: Any) -> Any:
    """A SQL value as JSON: blobs as ``{"$base64": ...}``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$base64": base64.b64encode(bytes(value)).decode()}
    return value


def _stored_ids(folder: pathlib.Path) -> list[str]:
    try:
        with os.scandir(folder) as it:
            return sorted(e.name[:-7] for e in it if e.name.endswith(".sqlite") and len(e.name) == 71
                          and set(e.name[:64]) <= _HEX64)
    except FileNotFoundError:
        return []


def namespaces(runtime: Any) -> dict[str, Any]:
    """The namespaces this server serves, with their class and the number of stored objects."""
    out = []
    for key, entry in sorted(runtime.classes.items()):
        out.append({"namespace": key, "class": entry.class_name,
                    "stored": len(_stored_ids(runtime.objects_dir / key))})
    return {"namespaces": out}


def _summary(key: str, hex_id: str, s: Any) -> dict[str, Any]:
    return {"namespace": key, "id": hex_id, "name": s.name, "size": s.size, "last_write_ms": s.last_write_ms,
            "last_write": _iso(s.last_write_ms), "alarm_ms": s.alarm_ms, "alarm": _iso(s.alarm_ms)}


def listing_args(runtime: Any, args: dict[str, Any]) -> tuple[str, int, list[str]]:
    """(q, limit, namespaces) of an ``objects`` search, checked (InvalidInputError)."""
    q = str(args.get("q") or "").strip().lower()
    limit = args.get("limit", 100)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_OBJECTS:
        raise InvalidInputError(f"limit must be a whole number from 1 to {MAX_OBJECTS}, not {limit!r}")
    keys = [args["namespace"]] if args.get("namespace") else sorted(runtime.classes)
    for key in keys:
        if key not in runtime.classes:
            raise InvalidInputError(f"this server serves no namespace {key!r}")
    return q, limit, keys


def stored_ids(runtime: Any, key: str) -> list[str]:
    """The IDs of namespace ``key`` that have a file here."""
    return _stored_ids(runtime.objects_dir / key)


def summaries(runtime: Any, wanted: list[tuple[str, str]], q: str = "") -> list[dict[str, Any]]:
    """The summary rows of the objects ``wanted`` (namespace, ID) that have a file here and whose
    name or ID contains ``q``."""
    rows = []
    for key, hex_id in wanted:
        path = runtime.objects_dir / key / f"{hex_id}.sqlite"
        if not path.is_file():
            continue
        try:
            s = maintenance.summarize(path)
        except StorageError:
            continue  # deleted while we listed, or being replaced
        if q and q not in hex_id and q not in (s.name or "").lower():
            continue
        rows.append(_summary(key, hex_id, s))
    return rows


def objects(runtime: Any, args: dict[str, Any], keep: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """Stored objects of one namespace (or all), whose name or ID contains ``q``, newest write
    first; at most ``limit`` (<= MAX_OBJECTS). ``keep``: only the IDs it accepts (a cluster node's
    own objects)."""
    q, limit, keys = listing_args(runtime, args)
    wanted = [(key, hex_id) for key in keys for hex_id in _stored_ids(runtime.objects_dir / key)
              if keep is None or keep(hex_id)]
    rows = summaries(runtime, wanted, q)
    rows.sort(key=lambda r: r["last_write_ms"], reverse=True)
    return {"objects": rows[:limit], "total": len(rows), "truncated": len(rows) > limit}


def _bookmarks(path: pathlib.Path) -> dict[str, Any]:
    rng = maintenance.history_range(path)
    if rng is None:
        return {"available": False, "reason": "no history for this object (history is off, or the object "
                                              "was not written since it was turned on)"}
    first, last = rng
    return {"available": True, "first": first, "last": last,
            "first_time": _iso(parse_bookmark(first)[1]), "last_time": _iso(parse_bookmark(last)[1])}


def object_detail(path: pathlib.Path, key: str, hex_id: str) -> dict[str, Any]:
    """One object: its summary, tables with row counts, KV keys (the first MAX_KV_KEYS) and
    bookmark range."""
    s = maintenance.summarize(path, detail=True)
    keys: list[Any] = []
    if s.kv_keys:
        res = maintenance.run_sql(path, "SELECT key FROM _cf_KV ORDER BY key LIMIT ?", (MAX_KV_KEYS,))
        keys = [cell(r[0]) for r in res.rows]
    return dict(_summary(key, hex_id, s), database_size=s.database_size,
                tables=[{"name": t, "rows": n} for t, n in s.tables], kv_count=s.kv_keys, kv_keys=keys,
                bookmarks=_bookmarks(path))


def query(path: pathlib.Path, sql: Any, bindings: Any = ()) -> dict[str, Any]:
    """Run ``sql`` read-only (a statement that writes fails, naming that), with ``bindings`` for
    its ? placeholders; at most MAX_ROWS rows."""
    if not isinstance(sql, str) or not sql.strip():
        raise InvalidInputError("sql must be a non-empty string")
    try:
        res = maintenance.run_sql(path, sql, tuple(bindings))
    except InvalidInputError as e:
        if isinstance(e.__cause__, apsw.ReadOnlyError):
            raise InvalidInputError("this SQL writes to the database; the console only reads (change data "
                                    "with duro objects sql --write --server)") from e
        raise
    rows = res.rows[:MAX_ROWS]
    return {"columns": list(res.columns), "rows": [[cell(v) for v in r] for r in rows],
            "truncated": len(res.rows) > MAX_ROWS, "total": len(res.rows)}


def sockets(runtime: Any, front: Any) -> dict[str, Any]:
    """Open connections on the serving port, and every object's hibernatable WebSockets."""
    conns = getattr(getattr(front, "guard", None), "connections", None) or ()
    ws = sum(1 for c in conns if type(c).__name__ == "WebSocketConnection")
    return {"connections": {"http": len(conns) - ws, "websocket": ws},
            "objects": runtime.hibernation.listing()}
