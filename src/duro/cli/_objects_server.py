"""``duro objects --server URL``: the admin calls of the commands that go through a running server
(on a cluster: any node, which answers for the whole cluster), and the listing both ways print.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import pathlib
import sys
import urllib.error
import urllib.request
from typing import Any

from ..errors import DuroError, InvalidInputError
from ._admin import AdminUnavailable, admin_address
from ._data import _HEX64, DataContext, Target, UnknownObject
from ._output import Progress, format_ms, format_size, print_json, print_table

__all__ = ["ServerError", "admin_call", "remote_target", "list_remote", "export_remote", "print_listing"]

ADMIN_PREFIX = "/__duro/admin/"
_SERVER_LIST_LIMIT = 500  # the most objects a server's listing answers (admin_views.MAX_OBJECTS)


class ServerError(DuroError):
    """The running server refused or failed an admin request."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def print_listing(args: argparse.Namespace, rows: list[dict[str, Any]], where: str, *, owners: bool = False) -> None:
    """``duro objects list``'s output: JSON, a table (with the owner node on a cluster), or a line
    saying there is nothing ``where``."""
    if args.json:
        print_json(rows)
        return
    if not rows:
        space = f" in namespace {args.namespace}" if args.namespace else ""
        print(f"no objects with stored data{space} {where}")
        return
    heads = ["NAMESPACE", "ID", "NAME", "SIZE", "LAST WRITE", "ALARM"]
    table = [[r["namespace"], r["id"], r["name"] or "-", format_size(r["size"]) if r["size"] is not None else "-",
              r["last_write"] or "-", r["alarm"] or "-"] for r in rows]
    if owners:
        heads.append("OWNER")
        for line, r in zip(table, rows):
            line.append((r["owner"] or "-") + ("" if r["source"] in ("owner", None) else f" ({r['source']})"))
    print_table(heads, table, right=(3,))


def remote_target(ctx: DataContext, args: argparse.Namespace) -> Target:
    """The object ``args.object`` names, for the server to read: found here when its file is here,
    else its ID as its namespace mints it (the server says whether it exists; a name that could be
    in several namespaces is looked up in each)."""
    try:
        return ctx.resolve(args.object, args.namespace)
    except UnknownObject:
        pass
    text = args.object
    spaces = ctx.selected(args.namespace)
    if _HEX64.fullmatch(text):  # (resolve refused an ID no namespace mints)
        ns = next(n for n in spaces if n.key().is_valid(text.lower()))
        return Target(ns, text.lower(), None, ctx.path(ns, text.lower()))
    candidates = [Target(ns, ns.key().id_from_name(text).to_string(), text, pathlib.Path())
                  for ns in spaces]
    if len(candidates) == 1:
        return candidates[0]
    hits = []
    for t in candidates:
        try:
            admin_call(ctx, args.server, "object", {"namespace": t.namespace.unique_key, "id": t.id})
            hits.append(t)
        except ServerError as e:
            if e.status != 404:
                raise
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise InvalidInputError(f"an object named {text!r} exists in several namespaces "
                                f"({', '.join(t.namespace.label for t in hits)}); pass --namespace")
    raise UnknownObject(f"no object named {text!r} on the server (`duro objects list --server ...` shows them)")


def list_remote(ctx: DataContext, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"limit": _SERVER_LIST_LIMIT}
    if args.namespace:
        body["namespace"] = ctx.namespace(args.namespace).unique_key
    res = admin_call(ctx, args.server, "objects", body)
    labels = {ns.unique_key: ns.label for ns in ctx.namespaces}
    rows = []
    for r in res["objects"]:
        row = {"namespace": labels.get(r["namespace"], r["namespace"]), "unique_key": r["namespace"], "id": r["id"],
               "name": r["name"], "size": r["size"],
               "last_write": format_ms(r["last_write_ms"]) if r["last_write_ms"] is not None else None,
               "last_write_ms": r["last_write_ms"], "alarm": format_ms(r["alarm_ms"]) or None,
               "alarm_ms": r["alarm_ms"]}
        if res.get("cluster"):
            row.update(owner=r.get("owner"), source=r.get("source"))
        rows.append(row)
    for gone in res.get("unreachable") or ():
        print(f"duro objects list: warning: node {gone['node']} did not answer ({gone['error']}); its objects "
              "are listed from this node's copies", file=sys.stderr)
    if res.get("truncated"):
        print(f"duro objects list: note: {res['total']} objects; the server answered the {len(rows)} written last",
              file=sys.stderr)
    print_listing(args, rows, f"on {args.server}", owners=bool(res.get("cluster")))
    return 0


def export_remote(ctx: DataContext, server: str, t: Target, out: pathlib.Path) -> int:
    """Export through the server: it copies the object (on a cluster: its owner does), then hands
    the copy over in chunks, written to ``out`` once complete."""
    where = {"namespace": t.namespace.unique_key, "id": t.id}
    begin = admin_call(ctx, server, "export_begin", where)
    part = out.with_name(out.name + ".part")
    done = 0
    try:
        with open(part, "wb") as f, Progress("exporting", unit="bytes") as progress:
            while True:
                chunk = admin_call(ctx, server, "export_read", {**where, "token": begin["token"], "offset": done})
                data = base64.b64decode(chunk["data"])
                f.write(data)
                done += len(data)
                progress.update(done, begin["size"])
                if chunk["eof"]:
                    break
                if not data:
                    raise ServerError(f"the server at {server} sent an export that ends early", 502)
        os.replace(part, out)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return done


def admin_call(ctx: DataContext, url: str, op: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST to the server's admin listener (its address and token from the data directory)."""
    try:
        base, token = admin_address(ctx.data_dir, url)
    except AdminUnavailable as e:
        raise ServerError(f"{e}. Nothing was changed.", 403) from None
    url = base
    req = urllib.request.Request(base + ADMIN_PREFIX + op, data=json.dumps(body).encode(),
                                 method="POST", headers={"authorization": f"Bearer {token}",
                                                         "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=600) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read()).get("error") or e.reason
        except ValueError:
            message = str(e.reason)
        raise ServerError(f"the server at {url} answered {e.code}: {message}", e.code) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ServerError(f"cannot reach the server at {url}: {reason}. Nothing was changed.", 503) from None
