"""Durable Object facets (Cloudflare 2026): child objects with their own SQLite inside a parent.

``ctx.facets.get(name, get_startup_options)`` returns a stub (``fetch`` and RPC) to the facet
``name``; the callback runs only when the facet is not running, and returns ``{"class": cls}``
(optionally ``"id"``, the facet's ``ctx.id``, by default the parent's). A facet is an activation
of its own — its own gates, its own database at ``<parent>.facets/<sha256(name)[:32]>.sqlite`` beside
the parent's — that lives inside the parent: the parent is not evicted while a facet works, and a
facet is closed with the parent and reset with it. ``abort(name, reason)`` stops one (its old
stubs raise ``reason``; its storage stays), ``delete(name)`` also erases its database and its own
facets', ``clone(src, dst)`` replaces ``dst``'s database with a copy of ``src``'s.

Never: let a facet set an alarm (Cloudflare: "Facets currently cannot set alarms."); let a facet
stub cross RPC or storage.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import pathlib
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, cast

from ..core.lifecycle import ActivationState, DeactivationReason
from ..errors import ObjectResetError, StorageError, mark_remote
from ..ids import DurableObjectId, NamespaceKey
from ..runtime import Activation
from ..runtime.calls import Completed, Pending
from ..storage.history import SNAPSHOT_MARK, schedule_restore
from .namespace import DurableObjectStub

if TYPE_CHECKING:
    from .objects import DurableObjectState

__all__ = ["FacetSet", "FacetStub", "facet_path"]

MAX_NAME_CHARS = 256
MAX_DEPTH = 4  # including the root object
TEXT_NAME_TOO_LONG = "Facet name is too long (max 256 characters)."
TEXT_DEPTH = "Facet nesting depth limit exceeded. The maximum depth including the root Durable Object is 4."
TEXT_ALARMS = "Facets currently cannot set alarms."
TEXT_NOT_SERIALIZABLE = "Stubs pointing to Durable Object facets are not serializable."
TEXT_DELETED = "Facet was deleted."
TEXT_CLONED_OVER = "Facet was cloned-over."
TEXT_PARENT_GONE = "This facet's parent Durable Object is no longer active; get the facet again."


def facet_path(parent_db: pathlib.Path, name: str) -> pathlib.Path:
    """Where facet ``name`` of the object whose database is ``parent_db`` keeps its database."""
    return parent_db.with_suffix(".facets") / f"{hashlib.sha256(name.encode()).hexdigest()[:32]}.sqlite"


def refuse_alarm(act: Activation) -> None:
    """Facets cannot set alarms (Cloudflare's text, also in production)."""
    if act.facet_depth:
        raise RuntimeError(TEXT_ALARMS)


class _Vacant:
    """The instance of an activation that only maintains a facet's files (no user code runs)."""


class FacetSet:
    """``ctx.facets`` of one object (or facet): its running facets, by name."""

    def __init__(self, parent: Activation) -> None:
        self._parent = parent
        self._running: dict[str, Activation] = {}
        parent.holds.append(self._busy)
        parent.on_close.append(lambda _: self._close_all())
        parent.on_reset.append(lambda _, error: self._reset_all(error))

    # ---- the API -----------------------------------------------------------------------------
    def get(self, name: str, get_startup_options: Callable[[], Any]) -> "FacetStub":
        """A stub to facet ``name``; ``get_startup_options()`` (may be async) runs when the facet
        is not running and returns ``{"class": cls, "id"?: id}``."""
        self._check_name(name)
        if not getattr(self._parent.runtime.journal, "takes_facets", True):
            raise StorageError("facets are not supported in cluster mode yet: a facet's database is a file of its "
                               "own, outside the replicated log, and would not move with the object")
        if self._parent.facet_depth + 1 >= MAX_DEPTH:
            raise RuntimeError(TEXT_DEPTH)
        if not callable(get_startup_options):
            raise TypeError("facets.get() takes a name and a function returning the startup options "
                            "({'class': ...})")
        return FacetStub(self, name, get_startup_options)

    def abort(self, name: str, reason: Any = None) -> None:
        """Stop facet ``name`` now: its stubs raise ``reason``; its storage is kept, and the next
        ``get()`` starts it again (with whatever class its callback returns then)."""
        self._check_name(name)
        act = self._running.pop(name, None)
        if act is not None and act.broken is None and act.state is not ActivationState.CLOSED:
            err = ObjectResetError(str(reason) if reason is not None else "Facet was aborted.")
            mark_remote(err)
            act.reset(err, DeactivationReason.ABORT)

    def delete(self, name: str) -> Awaitable[None]:
        """Abort facet ``name`` ("Facet was deleted.") and erase its database and its facets'; the
        next ``get()`` starts empty. Starts at once; awaitable."""
        self.abort(name, TEXT_DELETED)
        return self._start(self._erase_tree(facet_path(self._parent.db.path, name)), "facets.delete")

    def clone(self, src: str, dst: str) -> Awaitable[None]:
        """Abort facet ``dst`` ("Facet was cloned-over.") and replace its database with a copy of
        ``src``'s (``src == dst`` only aborts). Starts at once; awaitable."""
        self._check_name(src)
        self.abort(dst, TEXT_CLONED_OVER)
        if src == dst:
            return Completed(None)
        return self._start(self._clone(src, dst), "facets.clone")

    # ---- running facets ------------------------------------------------------------------------
    def running(self, name: str) -> Activation | None:
        act = self._running.get(name)
        if act is None or act.broken is not None or act.state is ActivationState.CLOSED:
            return None
        return act

    def start(self, name: str, cls: Any, visible_id: DurableObjectId | None) -> Activation:
        """The activation of facet ``name`` running ``cls`` (built at its first event)."""
        act = self.running(name)
        if act is not None:
            return act
        parent = self._parent
        if parent.broken is not None or parent.state is ActivationState.CLOSED:
            raise ObjectResetError(TEXT_PARENT_GONE)
        env = getattr(parent.instance, "env", None)
        seen = visible_id if visible_id is not None else parent_visible_id(parent)

        def build(a: Activation) -> Any:
            from .objects import construct
            return construct(cls, a, env, seen)

        act = self._vacant_or(name, build)
        self._running[name] = act
        return act

    def _vacant_or(self, name: str, factory: Callable[[Activation], Any]) -> Activation:
        parent = self._parent
        internal = DurableObjectId(f"{parent.id}.{hashlib.sha256(name.encode()).hexdigest()[:12]}",
                                   name=None, namespace=parent.unique_key)
        act = Activation(parent.runtime, parent.unique_key, internal, factory, facet_path(parent.db.path, name))
        act.facet_depth = parent.facet_depth + 1
        return act

    def _busy(self, now: float) -> bool:
        return any(not a.idle_at(now) for a in self._running.values()
                   if a.broken is None and a.state is not ActivationState.CLOSED)

    def _close_all(self) -> None:
        for act in list(self._running.values()):
            if act.broken is None and act.state is not ActivationState.CLOSED:
                act.close(DeactivationReason.SHUTDOWN)
        self._running.clear()

    def _reset_all(self, error: BaseException) -> None:
        for act in list(self._running.values()):
            if act.broken is None and act.state is not ActivationState.CLOSED:
                act.reset(ObjectResetError(str(error)), DeactivationReason.ABORT)
        self._running.clear()

    # ---- maintenance -------------------------------------------------------------------------
    def _start(self, work: Any, what: str) -> Awaitable[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)
        self._parent.own(task)
        return cast(Awaitable[None], Pending(task, what, self._parent.unawaited_storage_failure))

    async def _maintain(self, path: pathlib.Path, job: Callable[[Activation], Any]) -> Any:
        """Run ``job`` on the database at ``path`` through an activation of its own (its writes go
        through the gates, commit and journal like any object's), then close it."""
        parent = self._parent
        act = Activation(parent.runtime, parent.unique_key,
                         DurableObjectId(f"{parent.id}.maintenance", name=None, namespace=parent.unique_key),
                         lambda _: _Vacant(), path)

        async def event(_: Any) -> Any:
            return job(act)
        try:
            return await act.run(event)
        finally:
            act.close(DeactivationReason.IDLE)

    async def _erase_tree(self, path: pathlib.Path) -> None:
        """Erase the facet database at ``path`` and every database below it (its facets)."""
        below = path.with_suffix(".facets")
        for db in [path, *sorted(below.rglob("*.sqlite"), reverse=True)] if below.is_dir() else [path]:
            await self._maintain(db, _erase)

    async def _clone(self, src: str, dst: str) -> None:
        parent = self._parent
        if parent.db.history is None:
            raise StorageError("facets.clone() needs point-in-time history (history_retention > 0): the copy "
                               "is applied as a restore when the facet next starts")
        from .snapshots import snapshot_file, take_snapshot
        running = self.running(src)
        if running is not None:
            await running.sync()  # its committed state, durable
            snap = take_snapshot(running, None)
            source = snapshot_file(running, snap)
        else:
            source = await self._maintain(facet_path(parent.db.path, src),
                                          lambda a: snapshot_file(a, take_snapshot(a, None)))
        target = facet_path(parent.db.path, dst)
        await self._erase_tree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        schedule_restore(target, SNAPSHOT_MARK + str(source))

    @staticmethod
    def _check_name(name: Any) -> None:
        if not isinstance(name, str):
            raise TypeError(f"a facet name is a str, not {type(name).__name__}")
        if len(name) > MAX_NAME_CHARS:
            raise TypeError(TEXT_NAME_TOO_LONG)


def _erase(act: Activation) -> None:
    act.db.delete_all()
    act.mark_confirmed()
    act.after_delete_all()


def parent_visible_id(act: Activation) -> DurableObjectId:
    """The ``ctx.id`` the object (or facet) behind ``act`` sees."""
    ctx: "DurableObjectState | None" = getattr(act, "ctx", None)
    return ctx.id if ctx is not None else act.id


def _startup_options(opts: Any) -> tuple[Any, Any]:
    if isinstance(opts, Mapping):
        cls, oid = opts.get("class"), opts.get("id")
    else:
        cls, oid = getattr(opts, "class", None), getattr(opts, "id", None)
    bound = getattr(cls, "_runtime", None)  # a namespace (ctx.exports.X): the class it serves
    if bound is not None and not isinstance(cls, type):
        entry = bound.classes.get(getattr(cls, "unique_key", None))
        cls = entry.cls if entry is not None else cls
    if not isinstance(cls, type):
        raise TypeError(f"the facet startup options must give a Durable Object class as 'class', not "
                        f"{type(cls).__name__}")
    return cls, oid


class FacetStub(DurableObjectStub):
    """A stub to one facet: ``fetch()`` and RPC, as an object's stub; no ``id``/``name``. Bound to
    the facet that runs when it first reaches it: after an abort it raises the abort's reason."""

    __duro_clone_refusal__ = TEXT_NOT_SERIALIZABLE

    def __init__(self, facets: FacetSet, name: str, startup: Callable[[], Any]) -> None:
        parent = facets._parent
        self._ns = cast(Any, _FacetNamespace(parent, name))
        self._facets = facets
        self._facet = name
        self._startup = startup
        self._act = facets.running(name)  # bound now if it runs: an abort breaks this stub
        self._last = None
        self._starting: asyncio.Future[None] | None = None

    def _target(self) -> Activation:
        act = self._act
        assert act is not None
        if act.broken is not None:
            raise act.in_gate.reset_error()
        if act.state is ActivationState.CLOSED:
            err = ObjectResetError(TEXT_PARENT_GONE)
            mark_remote(err)
            raise err
        return act

    async def _deliver(self, event: Callable[[Any], Any], after: "asyncio.Future[None] | None" = None,
                       delivered: "asyncio.Future[None] | None" = None, size: int = 0, kind: str = "other",
                       label: str = "", forward: Callable[[], tuple[str, bytes]] | None = None) -> Any:
        # A facet lives in its parent's process: it is never forwarded to another worker.
        if self._act is None:
            try:
                if self._starting is None:
                    self._starting = asyncio.ensure_future(self._start_facet())
                await asyncio.shield(self._starting)
            except BaseException:
                if delivered is not None and not delivered.done():
                    delivered.set_result(None)
                raise
        return await super()._deliver(event, after, delivered, size, kind, label)

    async def _start_facet(self) -> None:
        act = self._facets.running(self._facet)
        if act is None:
            opts = self._startup()
            if inspect.isawaitable(opts):
                opts = await opts
            cls, oid = _startup_options(opts)
            if isinstance(oid, str):
                oid = NamespaceKey(self._facets._parent.unique_key).id_from_string(oid)
            elif oid is not None and not isinstance(oid, DurableObjectId):
                raise TypeError(f"the facet startup option 'id' is a DurableObjectId or its string, not "
                                f"{type(oid).__name__}")
            act = self._facets.start(self._facet, cls, oid)
        self._act = act

    def __repr__(self) -> str:
        return f"<FacetStub {self._facet!r}>"


class _FacetNamespace:
    """What a stub reads of its namespace (the class name for messages, the runtime for calls made
    outside any object), for a facet."""

    def __init__(self, parent: Activation, name: str) -> None:
        self.class_name = f"facet {name!r}"
        self.unique_key = parent.unique_key
        self._runtime = parent.runtime
