"""One duro server as a node of a cluster (DESIGN.md §5): its NATS connection, its registration,
the objects it owns, and the journal its objects' commits go to.

- **Ownership.** An object is owned by the node that holds its lease (:mod:`.leases`). A node
  takes an object it is asked for when nobody answers for it ("no responders" on the object's
  subject): first come, by compare-and-swap on the lease. The node that receives the request
  claims, so the object lands where its traffic arrives and no control message or second hop is
  needed; the compare-and-swap alone picks the single winner, and the losers forward to it.
- **Taking an object** (:meth:`ClusterNode.acquire`): claim the lease, rebuild the object's file
  from snapshot + log (hash chain verified) and append the EPOCH record (:meth:`JetStreamJournal.take`),
  write the file, then subscribe to the object's subject ``duro.o.<key>``. Only then is it local.
- **Durability** (:class:`ClusterJournal`, the runtime's journal and barrier): every commit of an
  owned object is appended to its subject, fenced; the output gate releases the response once
  the servers acknowledged it (replicated, fsync'd). The object's local file is a cache the
  stream can always rebuild.
- **Losing an object.** A fenced append, a failed one, or this node's self-fencing drops the
  object here (unsubscribed, its instance reset: callers get a retryable error) and the next
  request finds the new owner. A self-fenced node registers again under a new incarnation.
- **Graceful stop** (:meth:`ClusterNode.close`): every owned object is snapshotted and its lease
  released at once, so its next request is taken by another node without waiting out the TTL (an
  object with an alarm is handed over instead: its lease keeps which object it is, with no owner).
- **Adoption.** Every TTL each node reads the leases: the objects of dead nodes, and those handed
  over, that rendezvous hashing over the live nodes gives to it are taken, so their alarms fire
  without waiting for a request. A taken object's stored alarm is put in this node's alarm index.

Never: serve an object before its EPOCH record is acknowledged, answer a request while this node
may not write, or release a lease whose object still has appends in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import pathlib
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import nats
import nats.errors

from ..core.lifecycle import DeactivationReason
from ..errors import ConfigError, DuroError, StorageError
from ..runtime.barrier import DurabilityBarrier
from ..runtime.events import batch_histograms
from ..storage import maintenance
from ..storage.durability import BarrierStatistics
from ..storage.paths import history_path
from .journal import FencedError, JetStreamJournal, ObjectLog
from .snapshots import snapshot_forever
from .leases import LeaseOptions, Leases, NodeNameTakenError, NodeRegistry, SelfFencedError, \
    object_key

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..storage.journalfile import Capture

__all__ = ["ClusterNode", "ClusterJournal", "MovedError", "OBJECT_SUBJECT"]

log = logging.getLogger("duro.cluster")

OBJECT_SUBJECT = "duro.o"


class MovedError(DuroError):
    """The object is not (or no longer) owned by this node: another node serves it. Raised to a
    call that reached this node's instance of it after it moved; retryable: the retry reaches the
    owner."""

    retryable = True


@dataclass
class Owned:
    """One object this node owns: its lease's journal handle, its link, its subscription."""

    namespace: str
    hex_id: str
    olog: ObjectLog
    link: "ClusterLink"
    sub: Any = None
    taken_at: float = field(default_factory=time.monotonic)


class ClusterNode:
    """This server's membership of the cluster at ``urls`` under the name ``node`` (module doc)."""

    def __init__(self, runtime: "Runtime", urls: list[str], node: str, *,
                 options: LeaseOptions | None = None, replicas: int | None = None) -> None:
        self.runtime = runtime
        self.urls = urls
        self.node = node
        self.options = options or LeaseOptions()
        self.replicas = replicas
        self.nc: Any = None
        self.js: Any = None
        self.registry: NodeRegistry | None = None
        self.leases: Leases | None = None
        self.journal: JetStreamJournal | None = None
        self.owned: dict[str, Owned] = {}
        self.on_request: Any = None  # set by the router: the callback of an object's subscription
        self.on_drop: Any = None  # set by the router: (namespace, hex_id) of an object dropped here
        self._locks: dict[str, asyncio.Lock] = {}
        # Leases of objects dropped while self-fenced (not released then: this node could not
        # write). If the registration comes back under the same incarnation they would stay held
        # by a live node that serves none of them: released as soon as it can write again.
        self._fenced_leases: dict[str, Owned] = {}  # key -> the object as it was dropped
        self._watch: asyncio.Task[None] | None = None
        self._adopt: asyncio.Task[None] | None = None
        self._snap: asyncio.Task[None] | None = None
        self.adopted = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closing = False
        self.taken = 0
        self.dropped = 0

    # ------------------------------------------------------------------ start and stop
    async def start(self) -> None:
        """Connect, check JetStream, register (ConfigError naming what is wrong), open the buckets
        and the journal stream."""
        try:
            # Reconnects never give up once connected; the first connection is bounded (with
            # unlimited reconnects the client would otherwise retry it for ever).
            self.nc = await asyncio.wait_for(
                nats.connect(self.urls, name=f"duro-{self.node}", connect_timeout=2, max_reconnect_attempts=-1,
                             reconnect_time_wait=0.2, ping_interval=1, max_outstanding_pings=2,
                             allow_reconnect=True), timeout=5)
        except (nats.errors.Error, OSError, asyncio.TimeoutError) as e:
            why = "no answer within 5 s" if isinstance(e, asyncio.TimeoutError) else (str(e) or type(e).__name__)
            raise ConfigError(f"cannot connect to NATS at {', '.join(self.urls)}: {why}; "
                              "is nats-server running there?") from None
        self.js = self.nc.jetstream(timeout=self.options.timeout)
        try:
            await self.js.account_info()
        except Exception as e:  # noqa: BLE001 - any answer but a good one means "no JetStream"
            await self.nc.close()
            raise ConfigError(f"NATS at {', '.join(self.urls)} does not offer JetStream ({type(e).__name__}: {e}); "
                              "start nats-server with JetStream on (-js, or a jetstream block) and "
                              "sync_interval: always") from None
        replicas = self.replicas
        if replicas is None:
            info = getattr(self.nc, "_server_info", {}) or {}
            replicas = 3 if info.get("cluster") else 1
        self.options = LeaseOptions(ttl=self.options.ttl, renew_every=self.options.renew_every,
                                    margin=self.options.margin, replicas=replicas, timeout=self.options.timeout)
        try:
            await self._register()
            self.leases = await Leases(self.registry).open()  # type: ignore[arg-type]
            self.journal = await JetStreamJournal(self.js, replicas=replicas).open()
        except NodeNameTakenError as e:
            await self.nc.close()
            raise ConfigError(str(e)) from None
        except BaseException:
            await self.nc.close()
            raise
        loop = asyncio.get_running_loop()
        self._watch = loop.create_task(self._watch_registration(), name="duro-cluster-watch")
        self._adopt = loop.create_task(self._adopt_forever(), name="duro-cluster-adopt")
        self._snap = loop.create_task(snapshot_forever(self), name="duro-cluster-snapshots")
        log.info("node %s joined the cluster at %s (replicas %d, lease ttl %.0f s)", self.node,
                 ", ".join(self.urls), replicas, self.options.ttl)

    async def _register(self) -> None:
        self.registry = NodeRegistry(self.js, self.node, self.options)
        await self.registry.register()
        if self.leases is not None:
            self.leases.registry = self.registry

    async def _watch_registration(self) -> None:
        """A self-fenced node drops every object (they move to other nodes), then registers again
        under a new incarnation and serves again."""
        while True:
            await asyncio.sleep(0.1)
            reg = self.registry
            if reg is None or self.closing:
                continue
            if reg.writable():
                if self._fenced_leases:
                    await self._release_fenced()
                continue
            await asyncio.sleep(0.05)  # a renewal that is merely late gets a moment
            if reg.writable() or self.closing:
                continue
            for key in list(self.owned):
                await self.drop(key, SelfFencedError(f"node {self.node} could not renew its registration in time; "
                                                     "retry: another node serves the object"))
            if reg._lost is None:
                continue  # still trying to renew: it may come back
            with contextlib.suppress(Exception):
                await reg.close(deregister=False)
            while not self.closing:
                try:
                    await self._register()
                    log.warning("node %s registered again (it had self-fenced); it serves again", self.node)
                    break
                except NodeNameTakenError:
                    await asyncio.sleep(0.5)  # the old registration has not expired yet
                except Exception as e:  # noqa: BLE001 - NATS unreachable: keep trying, bounded per try
                    log.warning("node %s cannot register again yet: %s", self.node, e)
                    await asyncio.sleep(1.0)

    async def _release_fenced(self) -> None:
        """Release the leases of the objects dropped while self-fenced (``_fenced_leases``), unless
        the object was taken here again meanwhile; one NATS failure leaves the rest for the next round."""
        released = 0
        for key, own in list(self._fenced_leases.items()):
            async with self._locks.setdefault(key, asyncio.Lock()):
                if self._fenced_leases.get(key) is not own:
                    continue  # taken here again meanwhile (it is in use): keep it
                if own.olog._flight is not None:
                    continue  # an append still on its way: not before it settled
                try:
                    path = self.runtime.db_path(own.namespace, own.hex_id)
                    when = await asyncio.to_thread(_stored_alarm, path) if path.exists() else None
                    assert self.leases is not None
                    if when is not None:  # a survivor adopts it at once, to fire its alarm
                        await self.leases.hand_over(own.olog.lease, {"ns": own.namespace, "id": own.hex_id})
                    else:
                        await self.leases.release(own.olog.lease)
                except Exception as e:  # noqa: BLE001 - NATS busy: the next round tries again
                    log.warning("node %s: the lease of object %s is not released yet: %s", self.node, key, e)
                    return
                self._fenced_leases.pop(key, None)
                released += 1
        if released:
            log.warning("node %s can write again: released the leases of the %d objects it dropped while "
                        "self-fenced (other nodes take them at once)", self.node, released)

    async def _adopt_forever(self) -> None:
        """Adopt the objects of dead nodes (and those handed over with an alarm to fire) that
        rendezvous hashing over the live nodes gives to this one: their alarms fire here, without
        waiting for a request to wake them."""
        every = float(os.environ.get("DURO_CLUSTER_ADOPT_EVERY", str(self.options.ttl)))
        while every > 0:
            await asyncio.sleep(every)
            reg, leases = self.registry, self.leases
            if reg is None or leases is None or not reg.writable() or self.closing:
                continue
            try:
                orphans = await leases.orphans()
                if not orphans:
                    continue
                live = await leases.live_nodes()
            except Exception as e:  # noqa: BLE001 - NATS unavailable: next round
                log.warning("node %s: looking for orphaned objects failed: %s", self.node, e)
                continue
            for key, held in orphans:
                if key in self.owned or _pick(live, key) != self.node or not self.runtime.serves(held["ns"]):
                    continue
                try:
                    await self.acquire(held["ns"], held["id"])
                    self.adopted += 1
                except Exception as e:  # noqa: BLE001 - another node won, or NATS is busy: next round
                    log.info("node %s: object %s not adopted: %s", self.node, held["id"], e)

    async def stop_serving(self) -> None:
        """The first step of a graceful stop, before the runtime drains its objects: answer no more
        calls from other nodes (they wait for the hand-over, then take the objects) and take no
        more objects. The objects' running events still commit through their journal."""
        self.closing = True
        for own in list(self.owned.values()):
            if own.sub is not None:
                with contextlib.suppress(Exception):
                    await own.sub.unsubscribe()
                own.sub = None

    def serving_gate(self) -> "_ServingGate":
        """A runtime service whose close is :meth:`stop_serving` (add it last: closed first)."""
        return _ServingGate(self)

    async def close(self) -> None:
        """A graceful stop: snapshot and release every owned object (their next requests are taken
        by other nodes at once), deregister, close the connection."""
        self.closing = True
        for task in (self._watch, self._adopt, self._snap):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        started = time.monotonic()
        released = await asyncio.gather(*(self._hand_over(key) for key in list(self.owned)), return_exceptions=True)
        if released:
            log.info("node %s handed over %d objects in %.3f s", self.node, len(released), time.monotonic() - started)
        for t in list(self._tasks):
            t.cancel()
        if self.registry is not None:
            await self.registry.close(deregister=True)
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await self.nc.drain()
            with contextlib.suppress(Exception):
                await self.nc.close()

    async def _hand_over(self, key: str) -> None:
        own = self.owned.pop(key, None)
        if own is None:
            return
        if own.sub is not None:
            with contextlib.suppress(Exception):
                await own.sub.unsubscribe()
        own.link.dropped = MovedError(f"object {own.hex_id} moved: its node {self.node} is stopping; retry")
        olog = own.olog
        path = self.runtime.db_path(own.namespace, own.hex_id)
        try:
            if olog._broken is None and not olog._queue and olog._flight is None and path.exists() \
                    and _wal_empty(path):
                data, history = await asyncio.to_thread(_closed_files, path)
                await olog.snapshot(data, history)  # the next owner rebuilds from here, not from the first record
        except Exception as e:  # noqa: BLE001 - a snapshot only shortens the next rebuild
            log.warning("object %s: no snapshot at hand-over (%s); the next owner replays its log", own.hex_id, e)
        try:
            when = await asyncio.to_thread(_stored_alarm, path) if path.exists() else None
            if when is not None:  # a survivor adopts it at once, to fire its alarm
                await self.leases.hand_over(olog.lease, {"ns": own.namespace, "id": own.hex_id})  # type: ignore[union-attr]
            else:
                await self.leases.release(olog.lease)  # type: ignore[union-attr]
        except Exception as e:  # noqa: BLE001 - it then ends with this node's registration
            log.warning("object %s: its lease was not released (%s); it moves once this node's registration "
                        "expires", own.hex_id, e)

    # ------------------------------------------------------------------ objects
    def subject(self, key: str) -> str:
        return f"{OBJECT_SUBJECT}.{key}"

    def owns(self, key: str) -> bool:
        reg = self.registry
        return key in self.owned and not self.closing and reg is not None and reg.writable()

    async def acquire(self, namespace: str, hex_id: str) -> None:
        """Take object ``hex_id`` of ``namespace`` (module doc). LeaseHeldError if another live node
        holds it; SelfFencedError, ClusterUnavailableError or StorageError otherwise."""
        key = object_key(hex_id)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key in self.owned:
                return
            if self.closing:
                raise MovedError(f"node {self.node} is stopping; retry: another node serves the object")
            assert self.leases is not None and self.journal is not None
            lease = await self.leases.claim(key, {"ns": namespace, "id": hex_id})
            self._fenced_leases.pop(key, None)  # its lease is in use again
            olog = await self.journal.take(lease, self.registry)
            path = self.runtime.db_path(namespace, hex_id)
            rel = str(path.relative_to(self.runtime.data_dir))
            stale = self.runtime.find(namespace, hex_id)
            if stale is not None:  # an instance from an earlier ownership: its file is rewritten now
                stale.reset(MovedError("the object was taken over again; retry"), DeactivationReason.ABORT)
                self.runtime.forget(stale)
            olog.bind(self.runtime.data_dir, rel)
            await asyncio.to_thread(_materialize, olog, self.runtime.data_dir, rel)
            own = Owned(namespace, hex_id, olog, ClusterLink(self, key, olog))
            self.owned[key] = own
            try:
                own.sub = await self.nc.subscribe(self.subject(key), cb=self.on_request)
            except BaseException:
                self.owned.pop(key, None)
                raise
            self.taken += 1
            when = await asyncio.to_thread(_stored_alarm, path)
            if when is not None:  # its alarm fires here now (set on the node that had it)
                self.runtime.alarms.note_outside_alarm(namespace, hex_id, None, when)
            log.info("node %s took object %s (epoch %d, %d records replayed%s)", self.node, hex_id, lease.epoch,
                     len(olog.rebuilt.records), ", from a snapshot" if olog.rebuilt.snapshot is not None else "")

    async def drop(self, key: str, error: BaseException) -> None:
        """Stop serving object ``key`` here (it moved, or its journal failed): unsubscribe, reset
        its instance. A lease still ours is released unless the node is self-fenced."""
        own = self.owned.pop(key, None)
        if own is None:
            return
        self.dropped += 1
        own.link.dropped = error
        # Its writes waiting for an acknowledgement fail now (retryably), not when their sends give
        # up: a self-fenced node answers its clients within its lease, not a journal timeout later.
        own.olog.abandon(error)
        log.warning("node %s dropped object %s: %s", self.node, own.hex_id, error)
        act = self.runtime.find(own.namespace, own.hex_id)
        if act is not None:
            act.reset(error, DeactivationReason.COMMIT_FAILED)
            self.runtime.forget(act)
        if self.on_drop is not None:
            self.on_drop(own.namespace, own.hex_id)
        if own.sub is not None:
            with contextlib.suppress(Exception):
                await own.sub.unsubscribe()
        if isinstance(error, SelfFencedError):
            self._fenced_leases[key] = own  # its lease is released if this node can write again
        elif not isinstance(error, FencedError) and self.registry is not None \
                and self.registry.writable():
            with contextlib.suppress(Exception):
                await self.leases.release(own.olog.lease)  # type: ignore[union-attr]

    def drop_soon(self, key: str, error: BaseException) -> None:
        task = asyncio.get_running_loop().create_task(self.drop(key, error))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def link_for(self, db_path: str | os.PathLike[str]) -> "ClusterLink":
        hex_id = pathlib.Path(db_path).name.removesuffix(".sqlite")
        own = self.owned.get(object_key(hex_id))
        if own is None:
            raise MovedError(f"object {hex_id} is not owned by node {self.node} (it moved, or was never taken "
                             "here); retry: the request is routed to its owner")
        return own.link

    def statistics(self) -> dict[str, Any]:
        j = self.journal
        return {"node": self.node, "owned": len(self.owned), "taken": self.taken, "dropped": self.dropped,
                "appends": j.appends if j else 0, "append_retries": j.retries if j else 0}


class _ServingGate:
    def __init__(self, node: ClusterNode) -> None:
        self.node = node

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        await self.node.stop_serving()


def _materialize(olog: ObjectLog, data_dir: pathlib.Path, rel: str) -> None:
    olog.materialize(data_dir, rel)


def _closed_files(path: pathlib.Path) -> tuple[bytes, bytes | None]:
    """A closed object's database file and its history file (None: it keeps none)."""
    data = path.read_bytes()
    try:
        return data, history_path(path).read_bytes()
    except FileNotFoundError:
        return data, None


def _wal_empty(path: pathlib.Path) -> bool:
    """The database file alone holds the object: its -wal is missing or empty (as a close leaves it)."""
    try:
        return os.stat(str(path) + "-wal").st_size == 0
    except FileNotFoundError:
        return True


def _stored_alarm(path: pathlib.Path) -> int | None:
    """The alarm the object's file holds (epoch ms), or None. Read only: the file must hold
    nothing the object's journal does not."""
    try:
        return maintenance.alarm_of(path)
    except StorageError:
        return None  # a damaged object reports itself when it is used


def _pick(nodes: list[str], key: str) -> str | None:
    """The live node that adopts orphaned object ``key``: rendezvous hashing, so that survivors
    split a dead node's objects without talking to each other."""
    best, chosen = b"", None
    for n in nodes:
        score = hashlib.blake2b(key.encode(), digest_size=8, key=n.encode()[:64]).digest()
        if score > best:
            best, chosen = score, n
    return chosen


class ClusterLink:
    """One owned object's :class:`~duro.storage.durability.JournalLink` over its :class:`ObjectLog`.
    Positions count this node's appends of the object (the stream's sequences are known only once
    acknowledged); the object's file is a cache, so ``written``/``synced`` have nothing to do."""

    def __init__(self, node: ClusterNode, key: str, olog: ObjectLog) -> None:
        self.node = node
        self.key = key
        self.olog = olog
        self.dropped: BaseException | None = None
        self._appended = 0
        self._settled = 0
        self._failed: BaseException | None = None
        self._cond = threading.Condition()
        self._loop_thread = threading.get_ident()

    def append(self, capture: "Capture") -> asyncio.Future[None]:
        if self.dropped is not None:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fut.set_exception(self.dropped)
            return fut
        fut = self.olog.append(capture)
        self._appended += 1
        n = self._appended
        fut.add_done_callback(lambda f: self._done(n, f))
        return fut

    def _done(self, n: int, fut: asyncio.Future[None]) -> None:
        err = fut.exception() if not fut.cancelled() else StorageError("the journal append was cancelled")
        with self._cond:
            self._settled = max(self._settled, n)
            if err is not None and self._failed is None:
                self._failed = err
            self._cond.notify_all()
        if err is not None and self.dropped is None:
            # The object cannot go on here: fenced (it moved), self-fenced, or an append whose
            # outcome is unknown. The next request takes it again (a rebuild reads what landed).
            self.node.drop_soon(self.key, err)

    def position(self) -> int:
        return self._appended

    def wait_durable(self, lsn: int) -> bool:
        with self._cond:
            if threading.get_ident() == self._loop_thread:
                # The event loop cannot wait for an acknowledgement it has to process itself:
                # "not yet" (a checkpoint is simply skipped until the appends settled).
                return self._settled >= lsn and self._failed is None
            self._cond.wait_for(lambda: self._settled >= lsn or self._failed is not None, timeout=60)
            return self._settled >= lsn and self._failed is None

    def written(self, through: int) -> None:
        pass

    def synced(self, through: int, *, durable: bool = False) -> None:
        pass

    def recover(self) -> None:
        """Nothing to redo here: an object whose append failed is dropped and taken again."""

    def check_open(self) -> None:
        if self.dropped is not None:
            raise MovedError(f"object {self.key} moved: {self.dropped}")
        if isinstance(self.olog._broken, FencedError):
            raise self.olog._broken


class ClusterJournal:
    """The runtime's journal and durability barrier in cluster mode: an owned object's commits go to
    its :class:`ClusterLink`; other files (the alarm index) to a local fsync barrier."""

    # A restore rewrites the object's file outside its connection: the log carries it as the
    # object's next commit, or the next owner would rebuild the object without it (runtime/restores.py).
    logs_restores = True
    # A facet's database is a file of its own, not in the object's log: refused (FacetSet.get).
    takes_facets = False

    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        self.report = None
        self._files = DurabilityBarrier("fsync")
        self.commits = 0
        self.batch_commits, self.fsync_seconds = batch_histograms()

    @property
    def mode(self) -> str:
        return "fsync"

    def open(self) -> Any:
        return SimpleNamespace(clean=True, redone=0, records=0, stray_removed=0, corrupt={}, seconds=0.0, last={})

    def start(self) -> None:
        self._files.start()

    def link(self, db_path: str | os.PathLike[str]) -> ClusterLink:
        return self.node.link_for(db_path)

    def append(self, key: str, capture: "Capture") -> asyncio.Future[None]:
        self.commits += 1
        own = self.node.owned.get(key)
        if own is None:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fut.set_exception(MovedError(f"object {key} moved to another node; retry"))
            return fut
        return own.link.append(capture)

    def submit(self, path: str, *, sync_dir: bool = False) -> asyncio.Future[None] | None:
        return self._files.submit(path, sync_dir=sync_dir)

    def pinning_keys(self) -> list[str]:
        return []

    async def close(self) -> None:
        await self._files.close()

    def statistics(self) -> BarrierStatistics:
        files = self._files.statistics()
        j = self.node.journal
        return BarrierStatistics(mode="fsync", commits=self.commits + files["commits"],
                                 flushes=(j.appends if j else 0) + files["flushes"],
                                 synced_files=files["synced_files"], pending_files=files["pending_files"])

