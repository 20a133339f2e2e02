"""``duro tail``: stream a running server's events live, one line per event.

It connects to the server's admin endpoint (``GET /__duro/admin/tail``, http/observe.py) with the
token the server wrote to ``DATA/admin.token`` and prints each record the server sends. Filters
are applied by the server, so a filtered-out event costs the stream nothing. When this command
reads slower than events happen, the server drops records rather than wait, and a line says how
many were dropped.

Exit codes: 0 stopped with Ctrl-C (or the server shut down); 1 the server cannot be reached or
refused; 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, TextIO

from ..config import find_config_file, load_project
from ..errors import ConfigError
from ._admin import AdminUnavailable, admin_address
from ._output import format_ms

__all__ = ["add_tail_parser"]

TAIL_PATH = "/__duro/admin/tail"
STATUSES = ("ok", "error", "overloaded", "reset", "canceled")
KINDS = ("fetch", "rpc", "alarm", "websocket", "other")

DESCRIPTION = """\
Stream what a running duro server's objects are doing, live: one line per event (an HTTP fetch
to an object, an RPC call, an alarm, a WebSocket message/close/error), with its time, object
class and name, kind, status, duration, CPU time, SQL/KV rows read and written, and the lines
its handler printed or logged.

The server must be running with its admin listener (the default); duro tail reads the
listener's address and token from DATA/admin.url and DATA/admin.token, so run it
where you can read the server's data directory (--data, else the project's data_dir, else
PROJECT/.duro). Stop with Ctrl-C.

status is one of: ok, error (the handler raised), overloaded (refused before it ran: the
object's queue was full), reset (the object was reset), canceled (the caller went away).
duration is from the event's arrival at its object to its end, including waiting at the input
gate and for its writes to be durable; cpu is the server's event-loop CPU time over that span
(other objects' work that ran while it awaited counts too).
"""

EPILOG = """\
examples:
  duro tail                                   every event of the server using ./.duro
  duro tail --data /var/lib/myapp             the server started with --data /var/lib/myapp
  duro tail --object apples                   one object, by name (or by its 64-hex ID)
  duro tail --class ChatRoom --status error   failing events of one class
  duro tail --sample 0.01                     1 event in 100, on a busy server
  duro tail --json | jq 'select(.duration_ms > 100)'

output (one line per event; printed lines indented below it):
  2026-12-07T03:12:09.120Z  Counter apples  rpc increment  ok  1.8 ms  cpu 0.3 ms  rows 1/1
    | increment by 1
"""


def add_tail_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("tail", help="stream a running server's events live (filter by object, class, status)",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", metavar="URL", default=None,
                   help="the server's admin listener, used only when the data directory does not name it "
                        "(the server writes its address to DATA/admin.url)")
    p.add_argument("--data", metavar="DIR", default=None,
                   help="the server's data directory, where its admin.token is "
                        "(default: the config's data_dir, else PROJECT/.duro)")
    p.add_argument("--project", metavar="DIR", default=None,
                   help="project folder whose config names the data directory (default: the current folder)")
    p.add_argument("--object", "-o", metavar="NAME", action="append", default=[],
                   help="only this object: its name or 64-hex ID; repeatable")
    p.add_argument("--class", "-c", dest="classes", metavar="NAME", action="append", default=[],
                   help="only objects of this class (class name, e.g. Counter, or namespace key); repeatable")
    p.add_argument("--status", "-s", metavar="STATUS", action="append", default=[], choices=STATUSES,
                   help=f"only events that ended so: {', '.join(STATUSES)}; repeatable")
    p.add_argument("--kind", "-k", metavar="KIND", action="append", default=[], choices=KINDS,
                   help=f"only events of this kind: {', '.join(KINDS)}; repeatable")
    p.add_argument("--sample", metavar="FRACTION", type=float, default=1.0,
                   help="keep this fraction of the matching events, chosen at random (0 < F <= 1; default 1)")
    p.add_argument("--queue", metavar="N", type=int, default=1000,
                   help="events the server holds for this client while it is behind; past it they are "
                        "dropped and counted (default 1000)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per line, as the server sends it (type: hello, event, "
                        "dropped, heartbeat)")
    p.set_defaults(func=cmd_tail)
    return p


def _data_dir(args: argparse.Namespace) -> pathlib.Path:
    if args.data is not None:
        return pathlib.Path(args.data).absolute()
    root = pathlib.Path(args.project or ".")
    if args.project is not None or find_config_file(root) is not None:
        config = load_project(root)
        if config.data_dir is not None:
            return pathlib.Path(config.data_dir).absolute()
    return (root / ".duro").absolute()


def _format(event: dict[str, Any]) -> str:
    who = event.get("name") or (event.get("id") or "")[:16]
    label = event.get("label") or ""
    head = (f"{format_ms(event.get('time_ms'))}  {event.get('class')} {who}  {event.get('kind')}"
            f"{' ' + label if label else ''}  {event.get('status')}  {event.get('duration_ms', 0):.1f} ms"
            f"  cpu {event.get('cpu_ms', 0):.1f} ms  rows {event.get('rows_read', 0)}/{event.get('rows_written', 0)}")
    if event.get("error"):
        head += f"  {event['error']}"
    lines = [head] + [f"    | {line}" for line in event.get("logs") or ()]
    return "\n".join(lines)


def _print(obj: dict[str, Any], args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    kind = obj.get("type")
    if args.json:
        out.write(json.dumps(obj, ensure_ascii=False) + "\n")
        out.flush()
        return
    if kind == "event":
        out.write(_format(obj) + "\n")
        out.flush()
    elif kind == "dropped":
        err.write(f"duro tail: {obj.get('count')} events dropped: this terminal read slower than they "
                  f"happened (narrow the stream with --object/--class/--status or --sample)\n")
    elif kind == "hello":
        err.write(f"duro tail: connected to {args.server} (server pid {obj.get('pid')}); Ctrl-C to stop\n")


def cmd_tail(args: argparse.Namespace) -> int:
    err = sys.stderr
    if not 0 < args.sample <= 1:
        err.write(f"duro tail: --sample must be in (0, 1], not {args.sample}\n")
        return 2
    try:
        data_dir = _data_dir(args)
    except ConfigError as e:
        err.write(f"duro: {e}\n")
        return 2
    try:
        base, token = admin_address(data_dir, args.server)
    except AdminUnavailable as e:
        err.write(f"duro tail: {e}\n")
        return 1
    args.server = base
    query: list[tuple[str, str]] = [("object", o) for o in args.object]
    query += [("class", c) for c in args.classes] + [("status", s) for s in args.status]
    query += [("kind", k) for k in args.kind]
    query += [("sample", repr(args.sample)), ("queue", str(args.queue))]
    url = base + TAIL_PATH + "?" + urllib.parse.urlencode(query)
    req = urllib.request.Request(url, headers={"authorization": f"Bearer {token}"})
    try:
        # The server sends a heartbeat every 15 s: a minute of silence means it is gone.
        with urllib.request.urlopen(req, timeout=60) as resp:
            for raw in resp:
                line = raw.strip()
                if not line:
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if obj.get("type") == "heartbeat" and not args.json:
                    continue
                _print(obj, args, sys.stdout, err)
    except KeyboardInterrupt:
        return 0
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read()).get("error") or e.reason
        except ValueError:
            message = str(e.reason)
        err.write(f"duro tail: the server at {args.server} answered {e.code}: {message}\n")
        return 1
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        err.write(f"duro tail: cannot reach the server at {args.server}: {reason}\n")
        return 1
    except BrokenPipeError:  # pragma: no cover - piped into head
        return 0
    err.write("duro tail: the server ended the stream (it is shutting down)\n")
    return 0
