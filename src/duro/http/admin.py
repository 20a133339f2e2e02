"""The server's admin API, ``POST /__duro/admin/<operation>`` on the admin listener
(``adminfront.py``; never on the serving port), used by ``duro objects`` to change an object's data
while the server runs (``sql --write``, ``import``, ``restore``, ``branch``) and by the dashboard
to read (``namespaces``, ``objects``, ``object``, ``query``, ``sockets``: ``admin_views.py``), and
by ``duro objects export --server`` (``export_begin`` copies the object to a file, consistent as of
one moment; ``export_read`` hands it over in chunks of EXPORT_CHUNK bytes and removes it after the
last).

An operation on one object runs where the object is: with worker processes on the worker that
owns it; on a cluster node on the node that owns it (forwarded over the cluster router; an object
no live node owns is taken over by the node asked, as a request to it would be). ``objects`` and
``namespaces`` on a cluster node answer for the whole cluster (``admin_cluster.py``).

``import`` reads only files inside the folder the operator allowed (``admin.import_dir``); with
none set the server imports nothing (``duro objects import`` without ``--server`` still works on
a stopped server).

Every request must carry ``authorization: Bearer <token>``, the random token the server writes at
start to ``DATA/admin.token`` (mode 0600; removed at shutdown); anything else gets 403. Before it
touches an object's files, an operation resets the object's activation, so no instance has it open;
the change itself runs synchronously on the event loop, so no request can reach the object in the
middle of it. The CLI resolves names and namespaces; this endpoint only checks that the ID belongs
to a namespace this server serves. Answers are JSON: the result, or ``{"error": message}`` with
400 (bad input), 403, 404 (unknown operation or object), 409 (target exists) or 501.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import os
import pathlib
import secrets
import time
from typing import Any

from ..api import Response
from ..core.lifecycle import DeactivationReason
from ..errors import DuroError, ObjectResetError
from ..storage import maintenance
from ..storage.database import wait_closed
from . import admin_cluster, admin_views
from .observe import METRICS_CONTENT_TYPE, render_metrics

__all__ = ["AdminEndpoint", "ADMIN_PREFIX", "TOKEN_FILE", "TOKEN_ENV", "write_token"]

ADMIN_PREFIX = "/__duro/admin/"
TOKEN_FILE = "admin.token"
TOKEN_ENV = "DURO_ADMIN_TOKEN"  # the supervisor's token, for its worker processes
log = logging.getLogger("duro.admin")
_READS = frozenset({"ping", "namespaces", "objects", "object", "query", "sockets", "id", "owned_objects",
                    "export_begin", "export_read"})
# Reads of database files through their own read-only connections: on a worker thread, so that a
# search over many objects or a slow query does not stall the serving port. (The writing
# operations stay on the loop: running there is what keeps requests away from the object.)
_OFF_LOOP = frozenset({"namespaces", "objects", "object", "query", "owned_objects", "export_begin", "export_read"})
# Operations that are about no one object: run by the process (or node) asked.
_HERE = frozenset({"ping", "namespaces", "objects", "owned_objects", "sockets", "id"})
EXPORT_CHUNK = 256 * 1024  # bytes of an export per export_read (its answer crosses NATS on a cluster)
EXPORT_DIR = "admin-exports"  # DATA/admin-exports/<token>.sqlite: exports being read
EXPORT_MAX_AGE = 600.0  # seconds an export nobody finished reading is kept


# Operations that write an object's file outside its journal: on a cluster node they run on the
# object's owner and are appended to its replicated log before they are answered (cluster/changes.py).
_CLUSTER_WRITES = frozenset({"sql", "import", "restore", "branch"})


def runtime_has_file(runtime: Any, namespace: str, hex_id: str) -> bool:
    """Whether this server has a file of object ``hex_id`` of ``namespace``."""
    return namespace in runtime.classes and runtime.db_path(namespace, hex_id).is_file()


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def write_token(data_dir: pathlib.Path) -> tuple[str, pathlib.Path]:
    """A fresh admin token in ``DATA/admin.token`` (mode 0600): the token and the file's path."""
    token = secrets.token_urlsafe(32)
    path = data_dir / TOKEN_FILE
    tmp = path.with_name(TOKEN_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, token.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return token, path


class AdminEndpoint:
    """Owns the token file and answers admin requests for one App."""

    def __init__(self, app: Any, *, import_dir: pathlib.Path | None = None) -> None:
        self.app = app
        self.import_dir = import_dir.resolve() if import_dir is not None else None
        self.token: str | None = None
        self.token_path: pathlib.Path | None = None  # the file this endpoint wrote (and removes)
        self.token_file: pathlib.Path | None = None  # where the token is, for messages
        self.front: Any = None  # the AsgiFront, for its own metrics (set by it)
        router = getattr(app.runtime, "router", None)
        if router is not None:  # an operation on another worker's object runs on that worker
            router.handle("admin", self._from_worker)

    # ---- the token ------------------------------------------------------------------------------

    def start(self) -> None:
        """Write a fresh token to ``DATA/admin.token`` (called once the runtime holds the lock).
        A worker process takes the token its supervisor wrote (``DURO_ADMIN_TOKEN``)."""
        shared = os.environ.get(TOKEN_ENV)
        if shared and getattr(self.app.runtime, "worker", None) is not None:
            self.token = shared  # the supervisor's file: it removes it at the end, not this worker
            self.token_file = pathlib.Path(self.app.runtime.data_dir) / TOKEN_FILE
            return
        self.token, self.token_path = write_token(pathlib.Path(self.app.runtime.data_dir))
        self.token_file = self.token_path

    def close(self) -> None:
        if self.token_path is not None:
            self.token_path.unlink(missing_ok=True)
            self.token_path = None
        self.token = None

    def authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        if self.token is None:
            return False
        for k, v in headers:
            if k == b"authorization":
                given = v.decode("latin-1")
                return given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), self.token.encode())
        return False

    # ---- requests -------------------------------------------------------------------------------

    async def handle(self, scope: dict[str, Any], body: bytes) -> Response:
        if not self.authorized(scope["headers"]):
            return Response.json({"error": "forbidden: a valid admin token is required "
                                           f"(authorization: Bearer <contents of DATA/{TOKEN_FILE}>)"},
                                 status=403)
        op = scope["path"][len(ADMIN_PREFIX):].strip("/")
        if op == "metrics" and scope.get("method") in ("GET", "HEAD"):
            return Response(await self.metrics_text(), headers={"content-type": METRICS_CONTENT_TYPE})
        handler = getattr(self, f"_op_{op.replace('-', '_')}", None) if op.isidentifier() else None
        if handler is None or scope.get("method") != "POST":
            return Response.json({"error": f"unknown admin operation {scope.get('method')} {op!r}"}, status=404)
        if op in _CLUSTER_WRITES and self._cluster() is not None:
            return await self._cluster_write(op, handler, body)
        if op in ("objects", "namespaces") and self._cluster() is not None:
            return await self._run(op, getattr(self, f"_cluster_{op}"), body)  # the whole cluster's
        owner = self._owner(op, body)
        if owner is not None:
            return await self._on_worker(owner, op, body)
        if op == "branch" and getattr(self.app.runtime, "router", None) is not None:
            await self._reset_source(body)
        return await self._run(op, handler, body)

    async def _run(self, op: str, handler: Any, body: bytes) -> Response:
        try:
            args = json.loads(body or b"{}")
            if not isinstance(args, dict):
                raise ValueError("the body must be a JSON object")
            if op in _OFF_LOOP and not asyncio.iscoroutinefunction(handler):
                result = await asyncio.to_thread(handler, args)
            else:
                result = handler(args)
                if asyncio.iscoroutine(result):
                    result = await result
        except _Refused as e:
            return Response.json({"error": str(e)}, status=e.status)
        except maintenance.HistoryUnavailable as e:
            return Response.json({"error": str(e), "type": type(e).__name__}, status=501)
        except (DuroError, ValueError, KeyError, TypeError) as e:
            msg = f"missing field {e}" if isinstance(e, KeyError) else str(e)
            return Response.json({"error": msg, "type": type(e).__name__}, status=400)
        if op not in _READS:
            log.info("admin %s done: %s", op, {k: v for k, v in args.items() if k != "sql"})
        return Response.json(result)

    async def metrics_text(self) -> str:
        """This server's metrics, Prometheus text; with worker processes every worker's, each
        sample labelled with its worker."""
        text = render_metrics(self.app.runtime, self.front)
        fanout = getattr(self.app.runtime, "fanout", None)
        return await fanout.metrics(text) if fanout is not None else text

    # ---- worker processes -----------------------------------------------------------------------

    def _cluster(self) -> Any:
        """The cluster router when this server is a cluster node, else None."""
        router = getattr(self.app.runtime, "router", None)
        return router if getattr(router, "crosses_nodes", False) else None

    def _owner(self, op: str, body: bytes) -> Any:
        """Where ``op`` must run: the worker (or cluster node) that owns its object, so that no
        other process has the object's files open and a cluster node reads its current data; None
        for this one. A branch runs on the owner of the new object; the source's own worker resets
        it first (``_op_reset_for_branch``)."""
        router = getattr(self.app.runtime, "router", None)
        if router is None or op in _HERE:
            return None
        try:
            args = json.loads(body or b"{}")
            hex_id = str(args["to_id" if op == "branch" else "id"]).lower()
            if getattr(router, "crosses_nodes", False):
                # The object's own ID, checked: an object no node owns is taken over by this one.
                hex_id = self.app.runtime.namespace_key(args["namespace"]).id_from_string(hex_id).to_string()
        except (ValueError, KeyError, TypeError, AttributeError, DuroError):
            return None  # the operation itself says what is wrong with the request
        if getattr(router, "crosses_nodes", False) and router.is_local(hex_id):
            return None
        owner = router.owner(hex_id)
        return None if owner == router.slot.index else owner

    async def _on_worker(self, owner: Any, op: str, body: bytes) -> Response:
        router = self.app.runtime.router
        if getattr(router, "crosses_nodes", False):
            return await self._on_node(owner, op, body)
        answer = json.loads(await router.call(owner, "admin", "", "", None, op, body))
        return Response.json(answer["body"], status=answer["status"])

    async def _on_node(self, owner: Any, op: str, body: bytes) -> Response:
        """Run ``op`` on the cluster node that owns its object (``_owner``): forwarded over the
        cluster router with the object's namespace, so that an object no live node owns (released,
        or its owner died) is taken over here first, as a request to it would be. An object the
        cluster has never stored is not taken (nothing would come of it but a lease)."""
        router = self.app.runtime.router
        args = json.loads(body)
        namespace = args["namespace"]
        hex_id = router.remote_id(owner)
        if not (runtime_has_file(self.app.runtime, namespace, hex_id) or await router.stored(hex_id)):
            return Response.json({"error": f"object {hex_id} has no stored data in this cluster"}, status=404)
        try:
            raw = await router.call(owner, "admin", namespace, hex_id, None, op, body)
        except Exception as e:  # noqa: BLE001 - the owner did not answer, or failed: say so
            state = getattr(e, "state", None)
            message = state.get("message") if isinstance(state, dict) else (str(e) or type(e).__name__)
            log.warning("admin %s of object %s on its owner failed: %s", op, hex_id, message)
            return Response.json({"error": f"the node that owns object {hex_id} did not answer {op}: {message}",
                                  "retryable": True}, status=503)
        answer = json.loads(raw)
        return Response.json(answer["body"], status=answer["status"])

    async def _from_worker(self, namespace: str, hex_id: str, name: str | None, op: str, body: bytes,
                           link: Any) -> bytes:
        handler = getattr(self, f"_op_{op.replace('-', '_')}", None) if op.isidentifier() else None
        if handler is None:
            resp = Response.json({"error": f"unknown admin operation {op!r}"}, status=404)
        elif op in _CLUSTER_WRITES and self._cluster() is not None:
            resp = await self._cluster_write(op, handler, body, forwarded=True)
        else:
            if op == "branch":
                await self._reset_source(body)
            resp = await self._run(op, handler, body)
        return json.dumps({"status": resp.status, "body": json.loads(resp.body)}).encode()

    # ---- cluster nodes: writes ---------------------------------------------------------------------

    async def _cluster_write(self, op: str, handler: Any, body: bytes, *, forwarded: bool = False) -> Response:
        """A write in cluster mode (cluster/changes.py): on the object's owner (a branch: the
        source's, which takes the new object too), appended to its log before the answer."""
        router = self.app.runtime.router
        try:
            args = json.loads(body or b"{}")
            uk, hex_id, _ = self._target(args)
            changed = self._target(args, "to_id")[1] if op == "branch" else hex_id
        except _Refused as e:
            return Response.json({"error": str(e)}, status=e.status)
        except (DuroError, ValueError, KeyError, TypeError, AttributeError):
            return await self._run(op, handler, body)  # it says what is wrong with the request
        try:
            for target in dict.fromkeys((hex_id, changed)):
                held_by = await router.take_for_change(uk, target)
                if held_by is None:
                    continue
                if forwarded or target != hex_id:
                    return Response.json({"error": f"object {target} is in use on node {held_by}: {op} needs "
                                                   "an object no other node serves; retry later"}, status=409)
                answer = json.loads(await router.call(router.owner(hex_id), "admin", uk, hex_id, None, op, body))
                return Response.json(answer["body"], status=answer["status"])
        except DuroError as e:
            return Response.json({"error": f"{op} could not take object {hex_id} on this node: {e}; retry"},
                                 status=503)
        resp = await self._run(op, handler, body)
        if resp.status == 200:
            try:
                await router.log_change(uk, changed)
            except DuroError as e:
                return Response.json({"error": str(e), "type": type(e).__name__}, status=503)
        return resp

    async def _reset_source(self, body: bytes) -> None:
        """Before a branch: the source object's own worker resets it (its file synced and closed)."""
        router = self.app.runtime.router
        try:
            args = json.loads(body)
            src = str(args["id"]).lower()
        except (ValueError, KeyError, TypeError):
            return
        owner = router.owner(src)
        if owner != router.slot.index:
            await router.call(owner, "admin", "", "", None, "reset_for_branch", body)

    def _op_reset_for_branch(self, args: dict[str, Any]) -> dict[str, Any]:
        uk, hex_id, _ = self._target(args)
        self._reset(uk, hex_id, "duro objects branch")
        return {"ok": True}

    # ---- helpers --------------------------------------------------------------------------------

    def _target(self, args: dict[str, Any], id_field: str = "id") -> tuple[str, str, pathlib.Path]:
        runtime = self.app.runtime
        unique_key = args["namespace"]
        if unique_key not in runtime.classes:
            raise _Refused(404, f"this server serves no namespace {unique_key!r} "
                                f"(it serves {', '.join(sorted(runtime.classes)) or 'none'})")
        hex_id = runtime.namespace_key(unique_key).id_from_string(args[id_field]).to_string()
        path = runtime.db_path(unique_key, hex_id)
        wait_closed(path)  # an object evicted a moment ago may still be closing on a worker thread
        return unique_key, hex_id, path

    def _reset(self, unique_key: str, hex_id: str, why: str) -> None:
        """Reset the object's instance (if any) and wait until its file is closed and synced. With
        the node journal, the journal is first told durably that the file holds every record of
        the object: the file is about to change outside the journal, and a redo of older records
        after a power cut would undo that change."""
        runtime = self.app.runtime
        act = runtime.find(unique_key, hex_id)
        if act is not None:
            act.reset(ObjectResetError(f"The Durable Object was reset by an administrator ({why})."),
                      DeactivationReason.ABORT)
        path = runtime.db_path(unique_key, hex_id)
        wait_closed(path)
        journal = getattr(runtime, "journal", None)
        if journal is not None:
            link = journal.link(path)
            link.synced(link.position(), durable=True)

    # ---- operations -----------------------------------------------------------------------------

    def _op_ping(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "data_dir": str(self.app.runtime.data_dir), "pid": os.getpid()}

    # the dashboard's reads (admin_views.py): no reset, nothing changed

    def _op_namespaces(self, args: dict[str, Any]) -> dict[str, Any]:
        return admin_views.namespaces(self.app.runtime)

    def _op_objects(self, args: dict[str, Any]) -> dict[str, Any]:
        return admin_views.objects(self.app.runtime, args)

    # on a cluster node (handle() picks these): the whole cluster's

    async def _cluster_objects(self, args: dict[str, Any]) -> dict[str, Any]:
        return await admin_cluster.objects(self.app.runtime, args)

    async def _cluster_namespaces(self, args: dict[str, Any]) -> dict[str, Any]:
        return await admin_cluster.namespaces(self.app.runtime)

    def _op_owned_objects(self, args: dict[str, Any]) -> dict[str, Any]:
        """This cluster node's own objects (what another node's listing asks of it)."""
        if self._cluster() is None:
            raise _Refused(404, "owned_objects is for cluster nodes; use objects")
        return admin_cluster.owned_objects(self.app.runtime, args)

    def _stored(self, args: dict[str, Any]) -> tuple[str, str, pathlib.Path]:
        uk, hex_id, path = self._target(args)
        if not path.is_file():
            raise _Refused(404, f"object {hex_id} has no stored data")
        return uk, hex_id, path

    def _op_object(self, args: dict[str, Any]) -> dict[str, Any]:
        uk, hex_id, path = self._stored(args)
        detail = admin_views.object_detail(path, uk, hex_id)
        router = self._cluster()
        if router is not None:  # answered by the object's owner (``_owner``): this node
            detail["owner"] = router.slot.index
        return detail

    def _op_query(self, args: dict[str, Any]) -> dict[str, Any]:
        _, _, path = self._stored(args)
        bindings = args.get("bindings") or ()
        if not isinstance(bindings, (list, tuple)):
            raise _Refused(400, "bindings must be a list")
        return admin_views.query(path, args.get("sql"), bindings)

    # export through the server (duro objects export --server): a copy, then chunks of it

    def _exports(self) -> pathlib.Path:
        return pathlib.Path(self.app.runtime.data_dir) / EXPORT_DIR

    def _op_export_begin(self, args: dict[str, Any]) -> dict[str, Any]:
        """Copy the object, consistent as of one moment, to ``DATA/admin-exports/<token>.sqlite``;
        ``export_read`` hands the copy over. Copies older than EXPORT_MAX_AGE are removed."""
        _, hex_id, path = self._stored(args)
        folder = self._exports()
        folder.mkdir(mode=0o700, exist_ok=True)
        now = time.time()
        for old in folder.iterdir():
            try:
                if now - old.stat().st_mtime > EXPORT_MAX_AGE:
                    old.unlink()
            except FileNotFoundError:
                pass
        token = secrets.token_hex(16)
        size = maintenance.export_database(path, folder / f"{token}.sqlite")
        return {"token": token, "size": size, "id": hex_id, "chunk": EXPORT_CHUNK}

    def _op_export_read(self, args: dict[str, Any]) -> dict[str, Any]:
        """Up to EXPORT_CHUNK bytes of an export from ``offset`` (base64); the copy is removed once
        its last byte was read."""
        self._target(args)
        token, offset = args.get("token"), args.get("offset", 0)
        if not isinstance(token, str) or len(token) != 32 or not set(token) <= set("0123456789abcdef"):
            raise _Refused(400, "token must be the one export_begin answered")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise _Refused(400, "offset must be a whole number >= 0")
        path = self._exports() / f"{token}.sqlite"
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                f.seek(offset)
                data = f.read(EXPORT_CHUNK)
        except FileNotFoundError:
            raise _Refused(404, "no such export (it was read to its end, it expired, or the object moved to "
                                "another node meanwhile): export again") from None
        eof = offset + len(data) >= size
        if eof:
            path.unlink(missing_ok=True)
        return {"data": base64.b64encode(data).decode(), "eof": eof, "size": size}

    def _op_id(self, args: dict[str, Any]) -> dict[str, Any]:
        """The ID a name maps to in a namespace (the dashboard's branch names its new object)."""
        uk = args["namespace"]
        if uk not in self.app.runtime.classes:
            raise _Refused(404, f"this server serves no namespace {uk!r}")
        if not isinstance(args.get("name"), str) or not args["name"]:
            raise _Refused(400, "name must be a non-empty string")
        return {"id": self.app.runtime.namespace_key(uk).id_from_name(args["name"]).to_string()}

    async def _op_sockets(self, args: dict[str, Any]) -> dict[str, Any]:
        local = admin_views.sockets(self.app.runtime, self.front)
        fanout = getattr(self.app.runtime, "fanout", None)  # worker processes: every worker's
        return await fanout.sockets(local) if fanout is not None else local

    def _note_alarm(self, unique_key: str, hex_id: str, name: str | None, path: pathlib.Path) -> None:
        """The object's files changed outside the runtime: if it now has an alarm, have the
        scheduler look at it by then (an early look is a harmless phantom)."""
        when = maintenance.alarm_of(path)
        scheduler = getattr(self.app.runtime, "alarms", None)
        if when is None or scheduler is None:
            return
        scheduler.note_outside_alarm(unique_key, hex_id, name, when)

    def _options(self) -> Any:
        return maintenance.history_options(getattr(self.app, "config", None))

    def _op_sql(self, args: dict[str, Any]) -> dict[str, Any]:
        uk, hex_id, path = self._target(args)
        if not path.is_file():
            raise _Refused(404, f"object {hex_id} has no stored data")
        self._reset(uk, hex_id, "duro objects sql --write")
        res = maintenance.run_sql(path, args["sql"], args.get("bindings") or (), write=True)
        maintenance.after_outside_write(path, self._options())
        self._note_alarm(uk, hex_id, args.get("name"), path)
        return {"columns": list(res.columns), "rows": [[admin_views.cell(v) for v in r] for r in res.rows],
                "changes": res.changes}

    def _importable(self, file: Any) -> pathlib.Path:
        """``file`` resolved (symlinks too), if it lies inside the allowed import folder."""
        if self.import_dir is None:
            raise _Refused(403, "this server imports no files: set admin.import_dir in the project's config "
                                "(or pass --admin-import-dir DIR) to the folder it may read them from, or stop "
                                "the server and run duro objects import without --server")
        if not isinstance(file, str) or not file:
            raise _Refused(400, "file must be a path")
        real = pathlib.Path(file).resolve()
        if not real.is_relative_to(self.import_dir):
            raise _Refused(403, f"{file} is outside the folder this server imports from ({self.import_dir}); "
                                "copy it there first")
        return real

    def _op_import(self, args: dict[str, Any]) -> dict[str, Any]:
        uk, hex_id, path = self._target(args)
        args["file"] = str(self._importable(args.get("file")))
        maintenance.check_sqlite_file(args["file"])
        if path.exists() and not args.get("force"):
            raise _Refused(409, f"object {hex_id} already exists; pass --force to replace it")
        self._reset(uk, hex_id, "duro objects import")
        maintenance.import_database(args["file"], path, name=args.get("name"))
        maintenance.after_outside_write(path, self._options())
        self._note_alarm(uk, hex_id, args.get("name"), path)
        return {"ok": True, "id": hex_id, "path": str(path)}

    def _op_restore(self, args: dict[str, Any]) -> dict[str, Any]:
        uk, hex_id, path = self._target(args)
        if not path.is_file():
            raise _Refused(404, f"object {hex_id} has no stored data")
        options = self._options()
        maintenance.check_point(args.get("bookmark"), args.get("at_ms"), options)
        # The history functions open the database themselves: no instance may have it open.
        self._reset(uk, hex_id, "duro objects restore")
        bookmark = maintenance.find_bookmark(path, bookmark=args.get("bookmark"), at_ms=args.get("at_ms"),
                                             options=options)
        result = maintenance.restore_object(path, bookmark, options)
        self._note_alarm(uk, hex_id, args.get("name"), path)
        return dict(result, id=hex_id)

    def _op_branch(self, args: dict[str, Any]) -> dict[str, Any]:
        uk, src_id, src = self._target(args)
        _, dst_id, dst = self._target(args, "to_id")
        if not src.is_file():
            raise _Refused(404, f"object {src_id} has no stored data")
        if dst.exists():
            raise _Refused(409, f"object {dst_id} already exists; branch into a new name")
        options = self._options()
        maintenance.check_point(args.get("bookmark"), args.get("at_ms"), options)
        # Reading the source's history opens its database: its instance is reset (data untouched).
        self._reset(uk, src_id, "duro objects branch")
        self._reset(uk, dst_id, "duro objects branch")
        bookmark = maintenance.find_bookmark(src, bookmark=args.get("bookmark"), at_ms=args.get("at_ms"),
                                             options=options)
        result = maintenance.branch_object(src, dst, bookmark, args.get("to_name"), options)
        self._note_alarm(uk, dst_id, args.get("to_name"), dst)
        return dict(result, id=dst_id)
