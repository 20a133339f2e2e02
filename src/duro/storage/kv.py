"""The key-value half of an object's storage: the hidden ``_cf_KV`` table and ``ctx.storage.kv``.

Owns the KV statements, key validation, the ``list()`` range rules (reference §3.1, §3.3, §13) and
the synchronous ``kv.list()`` iterator with its one-live-iterator rule. :class:`KvStore` runs them
through the storage port (``connection.py``), which owns the connection, the implicit transaction,
the table-existence cache and the translation of SQLite errors.

Semantics worth knowing:

* Keys are ``str``; order is UTF-8 byte order. ``_cf_KV.key`` is TEXT with the BINARY collation,
  which compares the UTF-8 bytes with memcmp; Python compares ``str`` by code point, which is the
  same order, so the range arithmetic below can be done on ``str``.
* Values go through :func:`duro.codec.encode`; ``None`` is stored like any other value.
* The only size limit is SQLite's length limit on the row (2,000,000 bytes):
  ``string or blob too big: SQLITE_TOOBIG``, nothing stored. There is no per-key, per-value or
  keys-per-call limit (SQLite-backed objects, §13.1, §13.2).
* Every method is atomic on its own: a multi-key put that fails stores none of its entries.

This module must never create the database file for a read (get, get_many, delete, delete_many
and list open an existing file or return at once), and never run user SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from duro.codec import decode, encode
from duro.errors import InvalidInputError, StorageError

if TYPE_CHECKING:  # pragma: no cover
    from duro.storage.connection import DatabaseConnection

__all__ = ["KvStore", "SyncKv", "KV_LIST_INVALIDATED_MESSAGE", "KV_TABLE"]

KV_LIST_INVALIDATED_MESSAGE = (
    "kv.list() iterator was invalidated because a new call to kv.list() was started. "
    "Only one kv.list() iterator can exist at a time."
)
_BOTH_STARTS_MESSAGE = "list() cannot be called with both start and startAfter values."
_LIMIT_MESSAGE = "List limit must be positive."

KV_TABLE = "_cf_KV"
_KV_CREATE = "CREATE TABLE IF NOT EXISTS _cf_KV (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID"
_KV_GET = "SELECT value FROM _cf_KV WHERE key = ?"
_KV_PUT = "INSERT OR REPLACE INTO _cf_KV (key, value) VALUES (?, ?)"
_KV_DELETE = "DELETE FROM _cf_KV WHERE key = ?"

_LIST_PAGE = 128  # rows the sync iterator fetches at a time


def _list_sql(has_lo: bool, has_hi: bool, reverse: bool) -> str:
    where = []
    if has_lo:
        where.append("key >= :lo")
    if has_hi:
        where.append("key < :hi")
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    order = "DESC" if reverse else "ASC"
    return f"SELECT key, value FROM _cf_KV{clause} ORDER BY key {order} LIMIT :limit"


_LIST_SQL = {
    (lo, hi, rev): _list_sql(lo, hi, rev)
    for lo in (False, True) for hi in (False, True) for rev in (False, True)
}


def _bad_key(key: object) -> TypeError:
    return TypeError(f"storage keys must be str, not {type(key).__name__}")


def _check_key(key: object) -> str:
    if isinstance(key, str):
        return key
    raise _bad_key(key)


def _not_unicode(bindings: Any) -> InvalidInputError:
    """The error for KV bindings with a ``str`` that is not valid Unicode: a list()'s bounds (bound
    by name), or a key (the first str bound)."""
    if isinstance(bindings, dict):
        return InvalidInputError("list() bounds contain a lone surrogate, which is not valid Unicode")
    key = next(b for b in bindings if isinstance(b, str))
    return InvalidInputError(
        f"key {key!r} cannot be stored: it contains a lone surrogate, which is not valid Unicode"
    )


def _successor(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix``; None if none."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code > 0x10FFFF:
            chars.pop()
            continue
        if 0xD800 <= code <= 0xDFFF:  # surrogates cannot occur in a stored key
            code = 0xE000
        chars[-1] = chr(code)
        return "".join(chars)
    return None


def list_range(start: str | None, start_after: str | None, end: str | None,
               prefix: str | None, limit: int | None) -> tuple[str | None, str | None] | None:
    """Validate ``list()`` options; return the half-open key range ``[lo, hi)`` (None = unbounded)
    or None when the range is empty."""
    for name, value in (("start", start), ("startAfter", start_after), ("end", end), ("prefix", prefix)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"list() option {name} must be a str, not {type(value).__name__}")
    if start is not None and start_after is not None:
        raise TypeError(_BOTH_STARTS_MESSAGE)
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"list() option limit must be an int, not {type(limit).__name__}")
        if limit <= 0:
            raise TypeError(_LIMIT_MESSAGE)
    lo = start if start is not None else (start_after + "\0" if start_after is not None else None)
    hi = end
    if prefix:
        if lo is None or lo < prefix:
            lo = prefix
        after = _successor(prefix)
        if after is not None and (hi is None or hi > after):
            hi = after
    if lo is not None and hi is not None and lo >= hi:
        return None
    return lo, hi


class KvStore:
    """The KV operations of one object, over its storage port and nothing else.
    ``ObjectDatabase`` is one (they are on the hot path of every request: a forwarding method
    would cost a call each)."""

    def __init__(self, port: DatabaseConnection) -> None:
        self.port = port

    def _create_kv_table(self) -> None:
        self.port.run_internal(_KV_CREATE)
        self.port.memo[KV_TABLE] = True

    # ---- single key -------------------------------------------------------------------------
    # Every statement goes through ``port.run_internal`` (which translates SQLite's errors), with
    # ``_not_unicode`` to word a key or bound that is not valid Unicode. ``memo.get(KV_TABLE) is
    # True`` first: the table is known to be there, hence the connection open, at the cost of no
    # call.

    def kv_get(self, key: str) -> Any | None:
        """The value stored under ``key``, or None. Never creates the database file."""
        if type(key) is not str:
            key = _check_key(key)
        port = self.port
        if port.memo.get(KV_TABLE) is not True and not port.readable(KV_TABLE):
            return None
        row = port.run_internal(_KV_GET, (key,), _not_unicode, first=True)
        port.rows_read += 1
        return None if row is None else decode(row[0])

    def kv_put(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` in the implicit transaction."""
        if type(key) is not str:
            key = _check_key(key)
        data = encode(value)
        port = self.port
        if not port.txn.open:
            port.ensure_transaction()
        if port.memo.get(KV_TABLE) is not True:
            self._create_kv_table()
        port.run_internal(_KV_PUT, (key, data), _not_unicode, rows=False)
        port.rows_written += 1

    def kv_delete(self, key: str) -> bool:
        """Delete ``key``; True if it existed. A database with no file stays without one."""
        if type(key) is not str:
            key = _check_key(key)
        port = self.port
        if not port.readable(KV_TABLE):
            return False
        port.ensure_transaction()
        port.run_internal(_KV_DELETE, (key,), _not_unicode, rows=False)
        port.rows_written += 1
        return port.changes() > 0

    # ---- many keys ----------------------------------------------------------------------------

    def kv_get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The stored values of ``keys``; missing keys omitted; sorted by UTF-8 byte order."""
        keys = [_check_key(k) for k in _as_key_list(keys)]
        port = self.port
        if not port.readable(KV_TABLE):
            return {}
        found: dict[str, bytes] = {}
        port.rows_read += len(keys)
        for key in set(keys):
            row = port.run_internal(_KV_GET, (key,), _not_unicode, first=True)
            if row is not None:
                found[key] = row[0]
        return {k: decode(found[k]) for k in sorted(found)}

    def kv_put_many(self, entries: Mapping[str, Any]) -> None:
        """Store every entry, or none of them."""
        if not isinstance(entries, Mapping):
            raise TypeError(f"put() entries must be a dict, not {type(entries).__name__}")
        rows = [(_check_key(k), encode(v)) for k, v in entries.items()]
        if not rows:
            return
        port = self.port
        port.ensure_transaction()
        if port.memo.get(KV_TABLE) is not True:
            self._create_kv_table()
        port.rows_written += len(rows)
        if len(rows) == 1:
            port.run_internal(_KV_PUT, rows[0], _not_unicode, rows=False)
            return
        port.run_internal("SAVEPOINT _cf_kv_batch")
        try:
            for row in rows:
                port.run_internal(_KV_PUT, row, _not_unicode, rows=False)
        except BaseException:
            port.abandon_savepoint("_cf_kv_batch")
            raise
        port.run_internal("RELEASE _cf_kv_batch")

    def kv_delete_many(self, keys: Iterable[str]) -> int:
        """Delete ``keys``; the number that existed."""
        keys = [_check_key(k) for k in _as_key_list(keys)]
        port = self.port
        if not port.readable(KV_TABLE) or not keys:
            return 0
        port.ensure_transaction()
        port.rows_written += len(keys)
        count = 0
        for key in set(keys):
            port.run_internal(_KV_DELETE, (key,), _not_unicode, rows=False)
            count += port.changes()
        return count

    # ---- list ---------------------------------------------------------------------------------

    def kv_list(self, *, start: str | None = None, start_after: str | None = None,
             end: str | None = None, prefix: str | None = None, reverse: bool = False,
             limit: int | None = None) -> dict[str, Any]:
        """Entries in ``[start, end)`` (or after ``start_after``), clamped to ``prefix``, in UTF-8
        order (high to low when ``reverse``), at most ``limit`` of them."""
        rng = list_range(start, start_after, end, prefix, limit)
        if rng is None:
            return {}
        rows = self.kv_range(rng[0], rng[1], bool(reverse), -1 if limit is None else limit)
        return {k: decode(v) for k, v in rows}

    def kv_range(self, lo: str | None, hi: str | None, reverse: bool, limit: int) -> list[tuple[str, bytes]]:
        """Up to ``limit`` (-1: all) raw rows with ``lo <= key < hi`` (None: unbounded)."""
        port = self.port
        if not port.readable(KV_TABLE):
            return []
        sql = _LIST_SQL[(lo is not None, hi is not None, reverse)]
        params: dict[str, Any] = {"limit": limit}
        if lo is not None:
            params["lo"] = lo
        if hi is not None:
            params["hi"] = hi
        found = port.run_internal(sql, params, _not_unicode)
        port.rows_read += len(found)
        return found


def _as_key_list(keys: Iterable[str]) -> list[Any]:
    if isinstance(keys, str):
        raise TypeError("expected a list of keys, not a single str")
    return list(keys)


class SyncKv:
    """``ctx.storage.kv``: synchronous get/put/delete/list over the same ``_cf_KV`` table, in the
    same implicit transaction as SQL and the async API."""

    __slots__ = ("_store", "_generation")

    def __init__(self, store: KvStore) -> None:
        self._store = store
        self._generation = 0

    def get(self, key: str) -> Any | None:
        return self._store.kv_get(key)

    def put(self, key: str, value: Any) -> None:
        self._store.kv_put(key, value)

    def delete(self, key: str) -> bool:
        return self._store.kv_delete(key)

    def list(self, options: Mapping[str, Any] | None = None, /, **kwargs: Any) -> Iterator[tuple[str, Any]]:
        """An iterator of ``(key, value)``. Options as keywords or one mapping: ``start``,
        ``start_after``/``startAfter``, ``end``, ``prefix``, ``reverse``, ``limit``. Starting a new
        ``list()`` invalidates the previous iterator."""
        opts = dict(options or {})
        opts.update(kwargs)
        if "startAfter" in opts:
            if opts.get("start_after") is not None:
                raise TypeError("pass start_after or startAfter, not both")
            opts["start_after"] = opts.pop("startAfter")
        unknown = set(opts) - {"start", "start_after", "end", "prefix", "reverse", "limit"}
        if unknown:
            raise TypeError(f"kv.list() got unknown options: {', '.join(sorted(unknown))}")
        limit = opts.get("limit")
        rng = list_range(opts.get("start"), opts.get("start_after"), opts.get("end"),
                         opts.get("prefix"), limit)
        self._generation += 1
        return _KvListIterator(self, rng, bool(opts.get("reverse", False)), limit)


class _KvListIterator:
    """Pages through the range ``_LIST_PAGE`` rows at a time, so it holds little memory and sees
    writes made between pages, like a cursor would."""

    __slots__ = ("_kv", "_generation", "_lo", "_hi", "_reverse", "_remaining", "_page", "_index", "_done")

    def __init__(self, kv: SyncKv, rng: tuple[str | None, str | None] | None, reverse: bool,
                 limit: int | None) -> None:
        self._kv = kv
        self._generation = kv._generation
        self._lo, self._hi = rng if rng is not None else (None, None)
        self._reverse = reverse
        self._remaining = -1 if limit is None else limit
        self._page: list[tuple[str, bytes]] = []
        self._index = 0
        self._done = rng is None

    def __iter__(self) -> _KvListIterator:
        return self

    def __next__(self) -> tuple[str, Any]:
        if self._generation != self._kv._generation:
            raise StorageError(KV_LIST_INVALIDATED_MESSAGE)
        if self._index >= len(self._page):
            if self._done:
                raise StopIteration
            self._fetch()
            if not self._page:
                raise StopIteration
        key, value = self._page[self._index]
        self._index += 1
        return key, decode(value)

    def _fetch(self) -> None:
        want = _LIST_PAGE if self._remaining < 0 else min(_LIST_PAGE, self._remaining)
        page = self._kv._store.kv_range(self._lo, self._hi, self._reverse, want)
        self._page = page
        self._index = 0
        if self._remaining >= 0:
            self._remaining -= len(page)
        if len(page) < want or self._remaining == 0:
            self._done = True
        elif self._reverse:
            self._hi = page[-1][0]
        else:
            self._lo = page[-1][0] + "\0"
