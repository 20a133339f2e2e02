"""``duro objects``: look at and repair the objects stored in a data directory.

Reading commands (``list``, ``show``, ``sql`` without ``--write``, ``export``) open databases
read-only and work whether or not a server is running; with ``--server URL`` they ask the running
server instead (its admin API's reads), which on a cluster node answers for the whole cluster:
every object, each read on the node that owns it. Writing commands (``sql --write``,
``import``, ``restore``, ``branch``) run offline while holding the data directory's lock, or, with
``--server URL``, through the running server's admin listener (found through the data directory,
cli/_admin.py; http/admin.py); with a server
running and no ``--server`` they refuse and change nothing.

Exit codes: 0 done; 1 storage or server failure; 2 bad input (also argparse's); 3 unknown object;
4 a server holds the data directory; 5 ``check`` found a damaged object.
"""

from __future__ import annotations

import argparse
import base64
import json
import pathlib
import re
import sys
from typing import Any, Callable

from ..errors import ConfigError, DuroError, InvalidInputError, StorageError
from ..storage import maintenance
from .check import add_check_parser
from ._objects_server import ServerError, admin_call, export_remote, list_remote, print_listing, remote_target
from ._data import DataContext, ServerRunning, Target, UnknownObject, load_context
from ._output import Progress, cell, format_ms, format_size, jsonable, parse_time, print_json, print_table

__all__ = ["add_objects_parser"]


OVERVIEW = """\
Look at the Durable Objects stored in a data directory, query them with SQL, copy them out and
in, and take them back to an earlier point in time.

Objects are named by ID (64 hex digits) or by name (what the code passed to get_by_name()).
The project's config (--project, default: this folder) gives the namespaces' binding names; the
data directory (--data) defaults to the config's data_dir, else PROJECT/.duro.

examples:
  duro objects list                              every object, its size, last write and alarm
  duro objects show apples                       tables, row counts, KV keys, alarm, bookmarks
  duro objects sql apples "SELECT * FROM counter"
  duro objects export apples apples.sqlite       a standalone SQLite copy
  duro objects import apples.sqlite --to pears   a new object from that copy
  duro objects restore apples --at -15m          back to 15 minutes ago (server stopped,
                                                 or add --server http://127.0.0.1:8787)
  duro objects branch apples --at -1h --to apples-1h-ago
  duro objects check                             integrity_check over every object
"""

_EXIT_BAD_INPUT = 2
_NEGATIVE = re.compile(r"^-\d+$|^-\d*\.\d+$|^-(\d+(\.\d+)?[smhd])+$")
_EXIT_UNKNOWN = 3
_EXIT_SERVER_RUNNING = 4


# ---- the parser ----------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, *, namespace: bool = True) -> None:
    g = p.add_argument_group("where")
    g.add_argument("--data", metavar="DIR", default=None,
                   help="data directory (default: the config's data_dir, else PROJECT/.duro)")
    g.add_argument("--project", metavar="DIR", default=None,
                   help="project folder whose config names the namespaces (default: the current folder)")
    if namespace:
        g.add_argument("--namespace", "-n", metavar="N", default=None,
                       help="binding (COUNTER), class (Counter) or unique key (counter-Counter); "
                            "needed when a name exists in several namespaces")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _server_arg(p: argparse.ArgumentParser, *, read: bool = False) -> None:
    where = ("The request goes to the server's admin listener, whose address the server writes to "
             "DATA/admin.url; URL is used only when that file is absent")
    if read:
        p.add_argument("--server", metavar="URL", default=None,
                       help="ask the running server instead of reading the files here. On a cluster node "
                            "(duro serve --cluster) this covers the whole cluster: every object, each read "
                            "on the node that owns it now. " + where)
        return
    p.add_argument("--server", metavar="URL", default=None,
                   help="make the change through the running server (e.g. --server http://127.0.0.1:8787), "
                        "which resets the object first; needed while a server uses the data directory. "
                        "On a cluster node the change is made by the node that owns the object and is "
                        "in the object's replicated log before the command answers. " + where)


def _sub(sub: Any, name: str, help: str, description: str, examples: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=description, epilog="examples:\n" + examples,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    # Let "--at -15m" through: argparse takes an argument that starts with "-" for an option unless
    # it looks like a negative number, and this parser has no options that look like one.
    p._negative_number_matcher = _NEGATIVE  # type: ignore[attr-defined]
    return p


def add_objects_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``duro objects ...`` to the ``duro`` command's subparsers."""
    p = sub.add_parser("objects", help="list, inspect, query, export, import and restore objects",
                       description=OVERVIEW, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])
    osub = p.add_subparsers(dest="objects_command", metavar="SUBCOMMAND")

    s = _sub(osub, "list", "every stored object: id, name, size, last write, pending alarm",
             "List the objects that have stored data. The name shows once the object has been written "
             "to after being reached by name.",
             "  duro objects list\n  duro objects list --namespace COUNTER --json\n"
             "  duro objects list --data /var/lib/myapp/.duro\n"
             "  duro objects list --server http://127.0.0.1:8787   (a cluster node: every node's objects,\n"
             "                                                     with the node that owns each)\n")
    _common(s)
    _server_arg(s, read=True)
    s.set_defaults(func=cmd_list)

    s = _sub(osub, "show", "one object: tables, row counts, KV keys, alarm, bookmark range",
             "Show one object: its file, size, last write, alarm, KV key count, its SQL tables with "
             "row counts, and the range of bookmarks it can be restored to.",
             "  duro objects show apples\n"
             "  duro objects show 6f1c...e2 --json            (by its 64-hex ID)\n")
    _common(s)
    _server_arg(s, read=True)
    s.add_argument("object", metavar="ID_OR_NAME", help="the object's 64-hex ID or its name")
    s.set_defaults(func=cmd_show)

    s = _sub(osub, "sql", "run SQL on one object (read-only unless --write)",
             "Run SQL on one object's database and print the rows of the last statement. The "
             "database is opened read-only unless --write is given; a write needs the server "
             "stopped, or --server URL. Hidden tables: _cf_KV (key, value) and _cf_METADATA.",
             "  duro objects sql apples \"SELECT * FROM counter\"\n"
             "  duro objects sql apples \"SELECT * FROM counter WHERE k = ?\" --param n\n"
             "  duro objects sql apples \"UPDATE counter SET v = 0\" --write\n"
             "  duro objects sql apples \"DELETE FROM counter\" --write --server http://127.0.0.1:8787\n")
    _common(s)
    s.add_argument("object", metavar="ID_OR_NAME", help="the object's 64-hex ID or its name")
    s.add_argument("sql", metavar="SQL", help="one or more statements")
    s.add_argument("--param", "-p", action="append", default=[], metavar="VALUE",
                   help="a value for the next ? placeholder (read as JSON when it parses, e.g. 42, "
                        "null, \"42\"; else as text); repeatable")
    s.add_argument("--write", action="store_true", help="allow the SQL to change data")
    s.add_argument("--server", metavar="URL", default=None,
                   help="run the SQL through the running server: read-only SQL is answered by the server "
                        "(on a cluster node: by the node that owns the object, with its current data; at "
                        "most 1000 rows); with --write the server resets the object first and makes the "
                        "change (on a cluster node: the owner, into the object's log). The request goes to "
                        "the server's admin "
                        "listener, whose address the server writes to DATA/admin.url; URL is used only "
                        "when that file is absent")
    s.set_defaults(func=cmd_sql)

    s = _sub(osub, "export", "copy one object into a standalone SQLite file",
             "Copy one object's database, consistent as of one moment, into FILE: a standalone SQLite "
             "database any sqlite3 tool can open. Works while the server runs.",
             "  duro objects export apples apples.sqlite\n  sqlite3 apples.sqlite .tables\n"
             "  duro objects export apples apples.sqlite --server http://127.0.0.1:8787\n")
    _common(s)
    _server_arg(s, read=True)
    s.add_argument("object", metavar="ID_OR_NAME", help="the object's 64-hex ID or its name")
    s.add_argument("file", metavar="FILE", help="where to write the copy")
    s.add_argument("--force", action="store_true", help="replace FILE if it exists")
    s.set_defaults(func=cmd_export)

    s = _sub(osub, "import", "create (or replace) an object from a SQLite file",
             "Make the object named NAME from a SQLite file (typically one written by export). "
             "Refuses if the object exists, unless --force (its current data is then lost).",
             "  duro objects import apples.sqlite --to pears\n"
             "  duro objects import apples.sqlite --to apples --force --server http://127.0.0.1:8787\n")
    _common(s)
    s.add_argument("file", metavar="FILE", help="a SQLite database file")
    s.add_argument("--to", required=True, metavar="NAME", help="name of the object to create")
    s.add_argument("--force", action="store_true", help="replace the object if it exists")
    _server_arg(s)
    s.set_defaults(func=cmd_import)

    s = _sub(osub, "restore", "take one object back to an earlier time or bookmark",
             "Restore one object to how it was at a time (within the retention window) or at a "
             "bookmark. Prints a bookmark that undoes the restore. With the server running, add "
             "--server URL: the server resets the object, restores it and answers. TIME is ISO-8601 "
             "(2026-11-27T10:03:00Z; no zone means UTC), epoch milliseconds, or a time ago: -90s, "
             "-15m, -1h, -2d.",
             "  duro objects restore apples --at -15m\n"
             "  duro objects restore apples --at 2026-11-27T10:03:00Z --server http://127.0.0.1:8787\n"
             "  duro objects restore apples --bookmark 0000000000000003-01a21b756428-c371ffae\n")
    _common(s)
    s.add_argument("object", metavar="ID_OR_NAME", help="the object's 64-hex ID or its name")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--at", metavar="TIME", help="the time to go back to")
    g.add_argument("--bookmark", metavar="B", help="the bookmark to go back to")
    _server_arg(s)
    s.set_defaults(func=cmd_restore)

    s = _sub(osub, "branch", "a new object that starts as another one was at a time",
             "Create the object NEW_NAME (in the same namespace) as a copy of ID_OR_NAME as it was at "
             "TIME or BOOKMARK. The original is not changed. TIME as for restore.",
             "  duro objects branch apples --at -1h --to apples-1h-ago\n"
             "  duro objects show apples-1h-ago\n")
    _common(s)
    s.add_argument("object", metavar="ID_OR_NAME", help="the object's 64-hex ID or its name")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--at", metavar="TIME", help="the time to copy from")
    g.add_argument("--bookmark", metavar="B", help="the bookmark to copy from")
    s.add_argument("--to", required=True, metavar="NEW_NAME", help="name of the new object")
    _server_arg(s)
    s.set_defaults(func=cmd_branch)
    add_check_parser(osub, _sub, _common, _command)
    return p


def _command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn duro's errors into one line on stderr and an exit code."""

    def run(args: argparse.Namespace) -> int:
        prog = f"duro objects {args.objects_command}"
        try:
            return fn(args)
        except BrokenPipeError:  # `duro objects list | head`
            sys.stderr.close()
            return 0
        except UnknownObject as e:
            code, msg = _EXIT_UNKNOWN, str(e)
        except ServerRunning as e:
            code, msg = _EXIT_SERVER_RUNNING, str(e)
        except ServerError as e:
            code = {404: _EXIT_UNKNOWN, 400: _EXIT_BAD_INPUT, 409: _EXIT_BAD_INPUT, 501: _EXIT_BAD_INPUT}.get(e.status, 1)
            msg = str(e)
        except maintenance.HistoryUnavailable as e:
            code, msg = _EXIT_BAD_INPUT, str(e)
        except (InvalidInputError, ConfigError) as e:
            code, msg = _EXIT_BAD_INPUT, str(e)
        except (StorageError, DuroError, OSError) as e:
            code, msg = 1, str(e)
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return code

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def _options(ctx: DataContext) -> Any:
    """The project's history settings (retention window), as the server uses them."""
    return maintenance.history_options(ctx.config)


def _context(args: argparse.Namespace, *, must_exist: bool = True) -> DataContext:
    return load_context(args.project, args.data, must_exist=must_exist)


def _row(t: Target, s: maintenance.ObjectSummary) -> dict[str, Any]:
    return {"namespace": t.namespace.label, "unique_key": t.namespace.unique_key, "id": t.id,
            "name": s.name if s.name is not None else t.name, "size": s.size,
            "last_write": format_ms(s.last_write_ms), "last_write_ms": s.last_write_ms,
            "alarm": format_ms(s.alarm_ms) or None, "alarm_ms": s.alarm_ms, "path": str(t.path)}


# ---- reading commands ----------------------------------------------------------------------------


@_command
def cmd_list(args: argparse.Namespace) -> int:
    """``duro objects list``."""
    ctx = _context(args)
    if args.server:
        return list_remote(ctx, args)
    targets = ctx.objects(args.namespace)
    rows = []
    with Progress("reading objects", unit="objects") as progress:
        for i, t in enumerate(targets):
            try:
                rows.append(_row(t, maintenance.summarize(t.path)))
            except StorageError as e:
                if t.path.exists():  # a file deleted while we listed is simply gone
                    print(f"duro objects list: warning: {e}", file=sys.stderr)
            progress.update(i + 1, len(targets))
    print_listing(args, rows, f"in {ctx.data_dir}")
    return 0


def _bookmarks(path: pathlib.Path) -> dict[str, Any]:
    """The bookmark range, read from the .history file without changing anything."""
    rng = maintenance.history_range(path)
    if rng is None:
        return {"available": False, "reason": "no history for this object (history is off, or the object "
                                              "was not written since it was turned on)"}
    return {"available": True, "first": rng[0], "last": rng[1]}


@_command
def cmd_show(args: argparse.Namespace) -> int:
    """``duro objects show``."""
    ctx = _context(args)
    if args.server:
        t = remote_target(ctx, args)
        o = admin_call(ctx, args.server, "object", {"namespace": t.namespace.unique_key, "id": t.id})
        info = {"namespace": t.namespace.label, "unique_key": t.namespace.unique_key, "id": t.id,
                "name": o.get("name") if o.get("name") is not None else t.name, "size": o["size"],
                "last_write": format_ms(o["last_write_ms"]), "last_write_ms": o["last_write_ms"],
                "alarm": format_ms(o["alarm_ms"]) or None, "alarm_ms": o["alarm_ms"],
                "database_size": o["database_size"], "kv_keys": o["kv_count"], "tables": o["tables"],
                "bookmarks": {k: v for k, v in o["bookmarks"].items() if k in ("available", "first", "last", "reason")}}
        if "owner" in o:
            info["owner"] = o["owner"]
        where = ("owner", o["owner"]) if "owner" in o else ("server", args.server)
    else:
        t = ctx.resolve(args.object, args.namespace)
        s = maintenance.summarize(t.path, detail=True)
        info = _row(t, s)
        info.update(database_size=s.database_size, kv_keys=s.kv_keys,
                    tables=[{"name": n, "rows": c} for n, c in s.tables], bookmarks=_bookmarks(t.path))
        where = ("file", str(t.path))
    if args.json:
        print_json(info)
        return 0
    ns = t.namespace
    b = info["bookmarks"]
    bookmarks = f"{b['first']} … {b['last']}" if b["available"] else f"- ({b['reason']})"
    pairs = [
        ("namespace", ns.label + (f" (class {ns.class_name}, key {ns.unique_key})" if ns.binding else "")),
        ("id", t.id),
        ("name", info["name"] or "- (not recorded)"),
        where,
        ("size", f"{format_size(info['size'])} on disk, database {format_size(info['database_size'])}"),
        ("last write", info["last_write"] + " UTC"),
        ("alarm", (info["alarm"] + " UTC") if info["alarm"] else "none"),
        ("kv keys", str(info["kv_keys"])),
        ("bookmarks", bookmarks),
    ]
    width = max(len(k) for k, _ in pairs)
    for k, v in pairs:
        print(f"{k.ljust(width)}  {v}")
    print()
    if info["tables"]:
        print_table(["TABLE", "ROWS"], [[x["name"], x["rows"]] for x in info["tables"]], right=(1,))
    else:
        print("no SQL tables")
    return 0


def _param(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, (dict, list)):
        return text
    return value


def _print_sql(args: argparse.Namespace, columns: list[str], rows: list[list[Any]], changes: int) -> None:
    if args.json:
        print_json({"columns": columns, "rows": [dict(zip(columns, r)) for r in rows], "changes": changes})
        return
    if columns:
        print_table(columns, [[cell(v) for v in r] for r in rows])
        print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    if changes or not columns:
        print(f"{changes} row{'s' if changes != 1 else ''} changed")


def _unblob(v: Any) -> Any:
    if isinstance(v, dict) and set(v) == {"$base64"}:
        return base64.b64decode(v["$base64"])
    return v


@_command
def cmd_sql(args: argparse.Namespace) -> int:
    """``duro objects sql``."""
    ctx = _context(args)
    t = remote_target(ctx, args) if args.server else ctx.resolve(args.object, args.namespace)
    params = [_param(p) for p in args.param]
    if args.write and args.server:
        res = admin_call(ctx, args.server, "sql", {"namespace": t.namespace.unique_key, "id": t.id, "name": t.name,
                                               "sql": args.sql, "bindings": params})
        _print_sql(args, res["columns"], [[_unblob(v) for v in r] for r in res["rows"]], res["changes"])
        return 0
    if args.server:  # read-only, answered by the server (on a cluster: the object's owner)
        got = admin_call(ctx, args.server, "query", {"namespace": t.namespace.unique_key, "id": t.id,
                                                 "sql": args.sql, "bindings": params})
        shown = [[v if args.json else _unblob(v) for v in r] for r in got["rows"]]
        _print_sql(args, got["columns"], shown, 0)
        if got.get("truncated"):
            print(f"duro objects sql: note: the server answered the first {len(shown)} of {got['total']} rows",
                  file=sys.stderr)
        return 0
    if args.write:
        with ctx.exclusive(f"write to {t.describe()}"):
            res = maintenance.run_sql(t.path, args.sql, params, write=True)
            maintenance.after_outside_write(t.path, _options(ctx))
            _index_alarm(ctx, t)
    else:
        res = maintenance.run_sql(t.path, args.sql, params)
    rows = [[jsonable(v) if args.json else v for v in r] for r in res.rows]
    _print_sql(args, list(res.columns), rows, res.changes)
    return 0


@_command
def cmd_export(args: argparse.Namespace) -> int:
    """``duro objects export``."""
    ctx = _context(args)
    t = remote_target(ctx, args) if args.server else ctx.resolve(args.object, args.namespace)
    out = pathlib.Path(args.file)
    if out.exists() and not args.force:
        raise InvalidInputError(f"{out} already exists; pass --force to replace it")
    if out.is_dir():
        raise InvalidInputError(f"{out} is a directory; give a file name")
    if args.server:
        size = export_remote(ctx, args.server, t, out)
    else:
        with Progress("exporting", unit="pages") as progress:
            size = maintenance.export_database(t.path, out, progress=progress.update)
    if args.json:
        print_json({"namespace": t.namespace.label, "id": t.id, "name": t.name, "file": str(out.absolute()),
                    "size": size})
    else:
        print(f"exported {t.describe()} to {out} ({format_size(size)})")
    return 0


# ---- writing commands ----------------------------------------------------------------------------


def _index_alarm(ctx: DataContext, t: Target) -> None:
    """Offline, after the object's files changed: keep the alarm index in step (an alarm that the
    change brought back must fire)."""
    maintenance.index_alarm_offline(ctx.data_dir, t.namespace.unique_key, t.id, t.name, t.path)


def _refuse_if_running(ctx: DataContext, what: str, server: str | None) -> None:
    if server is None:
        pid = ctx.server_pid()
        if pid is not None:
            raise ctx.running_error(what, pid)


@_command
def cmd_import(args: argparse.Namespace) -> int:
    """``duro objects import``."""
    src = pathlib.Path(args.file).absolute()
    maintenance.check_sqlite_file(src)
    ctx = _context(args, must_exist=False)
    t = ctx.new_target(args.to, args.namespace)
    if t.path.exists() and not args.force:
        raise InvalidInputError(f"{t.describe()} already exists; pass --force to replace it "
                                "(its current data is lost). Nothing was changed.")
    what = f"import into {t.describe()}"
    _refuse_if_running(ctx, what, args.server)
    if args.server:
        admin_call(ctx, args.server, "import", {"namespace": t.namespace.unique_key, "id": t.id, "name": t.name,
                                            "file": str(src), "force": bool(args.force)})
    else:
        with ctx.exclusive(what), Progress("importing", unit="pages") as progress:
            maintenance.import_database(src, t.path, name=t.name, progress=progress.update)
            maintenance.after_outside_write(t.path, _options(ctx))
            _index_alarm(ctx, t)
    if args.json:
        print_json({"namespace": t.namespace.label, "id": t.id, "name": t.name, "path": str(t.path)})
    else:
        print(f"imported {src} as {t.describe()}")
    return 0


def _point(args: argparse.Namespace) -> tuple[str | None, int | None]:
    if args.bookmark is not None:
        return args.bookmark, None
    return None, parse_time(args.at)


@_command
def cmd_restore(args: argparse.Namespace) -> int:
    """``duro objects restore``."""
    ctx = _context(args)
    t = ctx.resolve(args.object, args.namespace)
    bookmark, at_ms = _point(args)
    what = f"restore {t.describe()}"
    _refuse_if_running(ctx, what, args.server)
    maintenance.check_point(bookmark, at_ms, _options(ctx))
    if args.server:
        result = admin_call(ctx, args.server, "restore", {"namespace": t.namespace.unique_key, "id": t.id,
                                                      "name": t.name, "bookmark": bookmark, "at_ms": at_ms})
    else:
        with ctx.exclusive(what):
            found = maintenance.find_bookmark(t.path, bookmark=bookmark, at_ms=at_ms, options=_options(ctx))
            result = maintenance.restore_object(t.path, found, _options(ctx))
            _index_alarm(ctx, t)
    if args.json:
        print_json({"namespace": t.namespace.label, "id": t.id, "name": t.name, **result})
        return 0
    print(f"restored {t.describe()} to bookmark {result['bookmark']}")
    if result.get("undo"):
        print(f"to undo: duro objects restore {t.name or t.id} --bookmark {result['undo']}"
              + (f" --server {args.server}" if args.server else ""))
    return 0


@_command
def cmd_branch(args: argparse.Namespace) -> int:
    """``duro objects branch``."""
    ctx = _context(args)
    src = ctx.resolve(args.object, args.namespace)
    dst = ctx.new_target(args.to, None, default=src.namespace)
    bookmark, at_ms = _point(args)
    what = f"branch {src.describe()} into {args.to!r}"
    _refuse_if_running(ctx, what, args.server)
    maintenance.check_point(bookmark, at_ms, _options(ctx))
    if dst.path.exists():
        raise InvalidInputError(f"{dst.describe()} already exists; branch into a new name. Nothing was changed.")
    if args.server:
        result = admin_call(ctx, args.server, "branch", {"namespace": src.namespace.unique_key, "id": src.id,
                                                     "to_id": dst.id, "to_name": dst.name,
                                                     "bookmark": bookmark, "at_ms": at_ms})
    else:
        with ctx.exclusive(what):
            found = maintenance.find_bookmark(src.path, bookmark=bookmark, at_ms=at_ms, options=_options(ctx))
            result = maintenance.branch_object(src.path, dst.path, found, dst.name, _options(ctx))
            _index_alarm(ctx, dst)
    if args.json:
        print_json({"namespace": dst.namespace.label, "id": dst.id, "name": dst.name, "from": src.id,
                    "bookmark": result["bookmark"]})
        return 0
    print(f"created {dst.describe()} from {src.describe()} at bookmark {result['bookmark']}")
    return 0
