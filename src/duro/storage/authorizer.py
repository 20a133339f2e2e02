"""The SQLite authorizer that decides what user SQL (``ctx.storage.sql.exec``) may do.

It owns the allow-lists (PRAGMAs, functions, virtual-table modules), the ``_cf_`` name rule and the
per-statement flags the SQL layer reads after a denial (the transaction-statement message, the
"ALTER TABLE needs a guarded re-run" signal). It copies workerd's ``SqliteDatabase::isAuthorized``
as documented in the reference (§3.5, §13).

It must never run SQL, raise from the callback (SQLite cannot unwind a Python exception), or
decide anything for duro's own statements: while ``bypass`` is set, everything is allowed.
"""

from __future__ import annotations

import apsw

__all__ = ["Authorizer", "TRANSACTION_MESSAGE", "is_reserved_name"]

# workerd's text, verbatim (src/workerd/api/sql.c++, SqlStorage::allowTransactions).
TRANSACTION_MESSAGE = (
    "To execute a transaction, please use the state.storage.transaction() or "
    "state.storage.transactionSync() APIs instead of the SQL BEGIN TRANSACTION or SAVEPOINT "
    "statements. The JavaScript API is safer because it will automatically roll back on "
    "exceptions, and because it interacts correctly with Durable Objects' automatic atomic "
    "write coalescing."
)

_OK = apsw.SQLITE_OK
_DENY = apsw.SQLITE_DENY


def is_reserved_name(name: str | None) -> bool:
    """True for names user SQL may not touch: anything starting with ``_cf_``, any case."""
    return name is not None and name[:4].lower() == "_cf_"


# SQLite's core, date/time, aggregate, window, math, JSON and FTS5 helper functions, plus the
# internal functions ALTER TABLE runs. Build and version introspection (sqlite_version,
# sqlite_source_id, sqlite_compileoption_*, sqlite_offset) and load_extension are left out.
ALLOWED_FUNCTIONS = frozenset(
    {
        # core
        "abs", "changes", "char", "coalesce", "concat", "concat_ws", "format", "glob", "hex",
        "if", "ifnull", "iif", "instr", "last_insert_rowid", "length", "like", "likelihood",
        "likely", "lower", "ltrim", "max_scalar", "min_scalar", "nullif", "octet_length",
        "printf", "quote", "random", "randomblob", "replace", "round", "rtrim", "sign",
        "soundex", "substr", "substring", "total_changes", "trim", "typeof", "unhex", "unicode",
        "unistr", "unistr_quote", "unlikely", "upper", "zeroblob",
        # date and time
        "date", "time", "datetime", "julianday", "unixepoch", "strftime", "timediff",
        "current_date", "current_time", "current_timestamp",
        # aggregates
        "avg", "count", "group_concat", "max", "min", "string_agg", "sum", "total",
        "median", "percentile", "percentile_cont", "percentile_disc",
        # window functions
        "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead",
        "first_value", "last_value", "nth_value",
        # math
        "acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "ceil", "ceiling", "cos",
        "cosh", "degrees", "exp", "floor", "ln", "log", "log10", "log2", "mod", "pi", "pow",
        "power", "radians", "sin", "sinh", "sqrt", "tan", "tanh", "trunc",
        # JSON and JSONB
        "json", "json_array", "json_array_length", "json_extract", "->", "->>", "json_insert",
        "json_object", "json_patch", "json_remove", "json_replace", "json_set", "json_type",
        "json_valid", "json_quote", "json_group_array", "json_group_object", "json_each",
        "json_tree", "json_error_position", "json_pretty",
        "jsonb", "jsonb_array", "jsonb_extract", "jsonb_insert", "jsonb_object", "jsonb_patch",
        "jsonb_remove", "jsonb_replace", "jsonb_set", "jsonb_group_array", "jsonb_group_object",
        # FTS5
        "match", "highlight", "bm25", "snippet",
        # run by SQLite itself for ALTER TABLE (src/alter.c)
        "sqlite_rename_column", "sqlite_rename_table", "sqlite_rename_test", "sqlite_drop_column",
        "sqlite_rename_quotefix",
    }
)

ALLOWED_VTAB_MODULES = frozenset({"fts5", "fts5vocab", "rtree", "rtree_i32"})

# Eponymous virtual tables this SQLite build has that would reveal the hidden tables' layout or
# raw pages. workerd's SQLite is built without them.
_DENIED_TABLES = frozenset({"dbstat", "sqlite_dbpage", "sqlite_stmt", "sqlite_dbdata", "sqlite_dbptr"})

# PRAGMA signatures.
_NO_ARG, _BOOLEAN, _OBJECT, _OPTIONAL_OBJECT, _OPTIONAL_NUMBER, _OPTIONAL_NUMBER_OR_OBJECT, _ANY = range(7)

ALLOWED_PRAGMAS = {
    "data_version": _NO_ARG,
    "page_size": _NO_ARG,
    "table_list": _ANY,
    "table_info": _OBJECT,
    "table_xinfo": _OBJECT,
    "case_sensitive_like": _BOOLEAN,
    "foreign_keys": _BOOLEAN,
    "defer_foreign_keys": _BOOLEAN,
    "ignore_check_constraints": _BOOLEAN,
    "legacy_alter_table": _BOOLEAN,
    "recursive_triggers": _BOOLEAN,
    "reverse_unordered_selects": _BOOLEAN,
    "foreign_key_check": _OPTIONAL_OBJECT,
    "foreign_key_list": _OBJECT,
    "index_info": _OBJECT,
    "index_list": _OBJECT,
    "index_xinfo": _OBJECT,
    "quick_check": _OPTIONAL_NUMBER_OR_OBJECT,
    "optimize": _OPTIONAL_NUMBER,
}

_BOOLEAN_WORDS = frozenset({"0", "1", "on", "off", "yes", "no", "true", "false"})


def _unquote(arg: str) -> str:
    if len(arg) >= 2 and arg[0] in "'\"`[" and arg[-1] == {"[": "]"}.get(arg[0], arg[0]):
        return arg[1:-1]
    return arg


def _is_int(arg: str) -> bool:
    arg = _unquote(arg).strip()
    if arg[:1] in "+-":
        arg = arg[1:]
    return arg.isdigit() and arg.isascii()


def _pragma_allowed(pragma: str, arg: str | None) -> bool:
    sig = ALLOWED_PRAGMAS.get(pragma.lower())
    if sig is None:
        return False
    if sig == _ANY:
        return True
    if sig == _NO_ARG:
        return arg is None
    if arg is None:
        return sig != _OBJECT
    if sig == _BOOLEAN:
        return _unquote(arg).lower() in _BOOLEAN_WORDS
    if sig == _OPTIONAL_NUMBER:
        return _is_int(arg)
    if sig == _OPTIONAL_NUMBER_OR_OBJECT and _is_int(arg):
        return True
    return not is_reserved_name(_unquote(arg))


_READ = apsw.SQLITE_READ
_SELECT = apsw.SQLITE_SELECT
_FUNCTION = apsw.SQLITE_FUNCTION
_UPDATE = apsw.SQLITE_UPDATE

# Actions whose first parameter is the object name to check.
_NAME_IN_P1 = frozenset(
    {
        apsw.SQLITE_CREATE_TABLE, apsw.SQLITE_DELETE, apsw.SQLITE_DROP_TABLE, apsw.SQLITE_INSERT,
        apsw.SQLITE_CREATE_VIEW, apsw.SQLITE_DROP_VIEW, apsw.SQLITE_REINDEX,
    }
)
# Actions with (object name, table name) both to check.
_NAMES_IN_P1_P2 = frozenset(
    {
        apsw.SQLITE_CREATE_INDEX, apsw.SQLITE_DROP_INDEX, apsw.SQLITE_CREATE_TRIGGER,
        apsw.SQLITE_DROP_TRIGGER,
    }
)
_NEVER = frozenset(
    {
        apsw.SQLITE_ATTACH, apsw.SQLITE_DETACH, apsw.SQLITE_COPY,
        apsw.SQLITE_CREATE_TEMP_TABLE, apsw.SQLITE_DROP_TEMP_TABLE, apsw.SQLITE_CREATE_TEMP_INDEX,
        apsw.SQLITE_DROP_TEMP_INDEX, apsw.SQLITE_CREATE_TEMP_TRIGGER, apsw.SQLITE_DROP_TEMP_TRIGGER,
        apsw.SQLITE_CREATE_TEMP_VIEW, apsw.SQLITE_DROP_TEMP_VIEW,
    }
)


class Authorizer:
    """The callback installed with ``Connection.authorizer``; one per connection.

    Flags, reset by the SQL layer before each user statement:

    * ``bypass`` — duro's own statements are running: allow everything.
    * ``message`` — set when a denial has a better message than SQLite's ``not authorized``
      (the transaction text).
    * ``alter_pending`` — an ``ALTER TABLE`` was denied because SQLite does not pass the new name
      of ``RENAME TO`` to the authorizer; the SQL layer re-runs it with ``alter_guard`` set inside
      a savepoint and rolls it back if it produced a ``_cf_`` name.
    """

    __slots__ = ("bypass", "message", "alter_pending", "alter_guard")

    def __init__(self) -> None:
        self.bypass = False
        self.message: str | None = None
        self.alter_pending = False
        self.alter_guard = False

    def reset(self) -> None:
        self.message = None
        self.alter_pending = False

    def __call__(self, action: int, p1: str | None, p2: str | None, dbname: str | None,
                 trigger: str | None) -> int:
        if self.bypass:
            return _OK
        # The common cases first: SELECT, column reads, function calls.
        if action == _READ:
            if dbname not in (None, "main", "temp") or p1 in _DENIED_TABLES:
                return _DENY
            return _DENY if is_reserved_name(p1) else _OK
        if action == _SELECT or action == apsw.SQLITE_RECURSIVE:
            return _OK
        if action == _FUNCTION:
            return _OK if p2 in ALLOWED_FUNCTIONS else _DENY
        if dbname is not None and dbname != "main":
            # The temp schema may only be read and updated by SQLite's own nested statements
            # (ALTER TABLE rewrites sqlite_temp_master); nothing may be created there.
            if dbname == "temp" and action == _UPDATE:
                return _DENY if is_reserved_name(p1) else _OK
            return _DENY
        if action == _UPDATE or action in _NAME_IN_P1:
            return _DENY if is_reserved_name(p1) else _OK
        if action in _NAMES_IN_P1_P2:
            return _DENY if is_reserved_name(p1) or is_reserved_name(p2) else _OK
        if action == apsw.SQLITE_PRAGMA:
            return _OK if p1 is not None and _pragma_allowed(p1, p2) else _DENY
        if action == apsw.SQLITE_TRANSACTION or action == apsw.SQLITE_SAVEPOINT:
            self.message = TRANSACTION_MESSAGE
            return _DENY
        if action == apsw.SQLITE_ALTER_TABLE:
            # p1 is the schema name, p2 the table being altered.
            if is_reserved_name(p2):
                return _DENY
            if self.alter_guard:
                return _OK
            self.alter_pending = True
            return _DENY
        if action == apsw.SQLITE_ANALYZE:
            # PRAGMA optimize analyzes every table, hidden ones included; sqlite_stat1 holds
            # statistics, not data, so this is allowed (as in workerd).
            return _OK
        if action == apsw.SQLITE_CREATE_VTABLE or action == apsw.SQLITE_DROP_VTABLE:
            if is_reserved_name(p1) or p2 is None or p2.lower() not in ALLOWED_VTAB_MODULES:
                return _DENY
            return _OK
        if action in _NEVER:
            return _DENY
        return _DENY  # anything SQLite adds later is denied until reviewed
