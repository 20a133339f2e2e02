"""The runtime: the catalog of live activations, the data directory, eviction and the barrier.

At most one activation per object ID lives in a process, and an exclusive lock on the data
directory keeps a second process from opening the same objects. With worker processes
(``worker``, a :class:`~duro.runtime.router.WorkerSlot`) the supervisor holds that lock, each
worker serves only the objects it owns (:meth:`Runtime.owns`) and reaches the others through its
:class:`~duro.runtime.router.Router`. Idle activations are evicted
after ``limits.idle_timeout`` (in-memory state is lost, storage is not); the number of open
databases is bounded by ``limits.max_open_databases`` (when over it, idle activations are evicted,
least recently used first, those used only once before those used again).
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import logging
import os
import pathlib
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Literal, TypeVar

from ..clock import Clock, SystemClock
from ..core.lifecycle import DeactivationReason
from ..errors import ConfigError, OverloadedError, UnknownNamespaceError
from ..ids import DurableObjectId, NamespaceKey
from ..storage import migrate
from ..storage.migrate import Change, Plan
from ..storage.durability import Barrier
from ..storage.journal import HistoryOptions
from ..storage.paths import file_mode, make_dirs_durably, set_file_mode
from . import cpulimit
from .activation import Activation
from .alarms import AlarmScheduler
from .barrier import DurabilityBarrier
from .events import EventHub
from .journalrecovery import recover
from .nodejournal import NodeJournal
from .pruning import HistoryPruner
from .router import Router, WorkerSlot
from .hibernation import HibernationRegistry
from .tasks import TaskSupervisor, drain_tasks

__all__ = ["Runtime", "RuntimeLimits", "ClassEntry"]

T = TypeVar("T")
log = logging.getLogger("duro.runtime")


@dataclass(frozen=True)
class RuntimeLimits:
    idle_timeout: float = 70.0
    hibernation_timeout: float = 10.0
    max_open_databases: int = 2000
    max_queued_events: int = 1000
    max_queued_bytes: int = 128 * 1024 * 1024
    max_queue_age: float = 30.0
    max_name_bytes: int = 1024  # ids.MAX_NAME_BYTES
    cpu_ms: int = 30000  # CPU budget of one event (cpulimit.py); Cloudflare's default
    sweep_interval: float = 1.0
    # Pending I/O (ctx.wait_until work, outgoing RPC) keeps an idle object in memory for at most
    # this long after each operation started (Cloudflare's durable_object_io_tasks_prevent_eviction,
    # 15 minutes); 0 = it does not (the flag durable_object_io_tasks_do_not_prevent_eviction).
    io_keepalive: float = 900.0


@dataclass
class ClassEntry:
    unique_key: str
    class_name: str
    factory: Callable[[Activation], Any]
    cls: Any = None


# File descriptors one open object holds: its database and -wal (SQLite), its history file (the
# reader that follows the -wal reads through SQLite's descriptor), and with the per-file barrier
# (no node journal) its -shm: a journaled object takes no locks and has none (storage/opening.py).
# After FD_IDLE_SECONDS without an event an open object gives the history's back
# (``DatabaseConnection.release_fds``); the bound below still counts it, for objects that are busy.
FDS_PER_OPEN_DATABASE = 4
FDS_PER_JOURNALED_DATABASE = 3
FD_IDLE_SECONDS = 5.0
# Descriptors that busy objects may take past max_open_databases (idle ones are closed first);
# past them a new object is refused as overloaded. The front leaves these free too.
OVERFLOW_FDS = 256
# Databases chosen for eviction closed per turn of the loop (each close ~0.2 ms of the loop's time).
EVICT_STEP = 4


def _raise_fd_limit() -> int:
    """Raise the soft limit on open files as far as the hard limit (or the system) allows. Returns
    the soft limit now in force (0: unknown)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # macOS reports an unlimited hard limit but refuses more than kern.maxfilesperproc.
    for want in ((hard if hard != resource.RLIM_INFINITY else 65536), 10240):
        if soft != resource.RLIM_INFINITY and soft < want:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            except (ValueError, OSError):
                continue
            soft = want
        break
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def open_database_bound(configured: int, fd_limit: int, per_database: int = FDS_PER_OPEN_DATABASE) -> int:
    """How many databases may be open at once: ``configured``, unless the open-file limit cannot
    hold that many (a quarter of it, at least 256, is left for sockets and everything else)."""
    if fd_limit <= 0:
        return configured
    room = fd_limit - max(256, fd_limit // 4)
    return min(configured, max(16, room // per_database))


class Runtime:
    """Owns every activation, the durability barrier and the background tasks of one process.

    It is the :class:`~duro.runtime.alarms.AlarmHost` of its alarm scheduler."""

    def __init__(self, data_dir: str | os.PathLike[str], *, durability: Literal["fsync", "os"] = "fsync",
                 limits: RuntimeLimits | None = None, clock: Clock | None = None,
                 history_retention: float = 30.0, journal: bool = True,
                 migrations: Plan | None = None, worker: WorkerSlot | None = None, file_mode: int = 0o600) -> None:
        # The mode of every data file this process creates (storage/paths.py): 0o600 or 0o640.
        set_file_mode(file_mode)
        self.data_dir = pathlib.Path(data_dir).resolve()
        self.worker = worker
        self.router: Router | None = Router(worker) if worker is not None and worker.count > 1 else None
        self.durability = durability
        self.limits = limits or RuntimeLimits()
        # limits.max_open_databases, lowered at start if the open-file limit cannot hold that many.
        self.max_open_databases = self.limits.max_open_databases
        self.fds_per_database = FDS_PER_JOURNALED_DATABASE if durability == "fsync" and journal else \
            FDS_PER_OPEN_DATABASE
        self.open_database_ceiling = self.max_open_databases + OVERFLOW_FDS // self.fds_per_database
        self.clock = clock or SystemClock()
        # With fsync durability the node journal is the durability source of every object (one
        # fdatasync per batch for all of them) and the barrier of the files it does not journal
        # (the alarm index). ``journal=False`` keeps the per-file barrier (fdatasync of each WAL).
        self.journal: NodeJournal | None = None
        if durability == "fsync" and journal:
            router = self.router
            self.journal = NodeJournal(self.data_dir, history=history_retention > 0,
                                       folder=f"w{worker.index}" if router is not None and worker else None,
                                       owns=router.is_local if router is not None else None)
        self.barrier: Barrier = self.journal if self.journal is not None else DurabilityBarrier(durability)
        self.classes: dict[str, ClassEntry] = {}
        # Every event's counts for /metrics, and the records duro tail subscribes to.
        self.events = EventHub(lambda key: self.classes[key].class_name)
        self._activations: dict[tuple[str, str], Activation] = {}
        # Chosen for eviction, closed a few at a time: (activation, its last_used when chosen).
        self._evict_queue: collections.deque[tuple[Activation, float]] = collections.deque()
        self.hibernation = HibernationRegistry()  # hibernatable sockets; outlive instances
        self._lock_fd: int | None = None
        # The owner of every long-lived background task (the sweeper, the alarm scheduler's loop,
        # the history pruner): a crash is logged when it happens and raised again by close().
        self.tasks = TaskSupervisor()
        self._sweeper: asyncio.Task[None] | None = None
        self._services: list[Any] = []  # started/closed with the runtime (alarm scheduler, ...)
        self._calls: set[asyncio.Task[Any]] = set()  # RPC calls made outside any object, running
        self.alarms = AlarmScheduler(self, self.data_dir / "alarms.sqlite")  # the api layer installs ``invoke``
        self._services.append(self.alarms)
        # Point-in-time recovery: days of history kept per object (0 = off), pruned in the background.
        self.history = HistoryOptions.from_days(history_retention, self.clock.now_ms)
        # Blocking maintenance (WAL checkpoints, which fsync) runs here, never on the event loop.
        self._maintenance = ThreadPoolExecutor(max_workers=2, thread_name_prefix="duro-maintenance")
        if self.history is not None:
            self._services.append(HistoryPruner(self, self.history))
        self.started = False
        self._cpu_limited = False  # this runtime holds the process's CPU-limit timer
        # The project's migrations (and every tag in order): applied at start (storage/migrate.py).
        self.migrations = migrations
        self.migrated: list[Change] = []  # what the last start moved
        self._ns_keys: dict[str, NamespaceKey] = {}

    # ------------------------------------------------------------------ set-up
    def register(self, unique_key: str, class_name: str, factory: Callable[[Activation], Any], cls: Any = None) -> ClassEntry:
        entry = ClassEntry(unique_key, class_name, factory, cls)
        self.classes[unique_key] = entry
        return entry

    def offload(self, job: Callable[[], None]) -> None:
        """Run blocking storage maintenance on a worker thread (raises RuntimeError once closed)."""
        self._maintenance.submit(job)

    def own_call(self, task: "asyncio.Task[Any]") -> None:
        """Hold a call made outside any object (an RPC from the entrypoint) until it ends; at
        shutdown it gets the same grace period as ``wait_until`` work."""
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    def add_service(self, service: Any) -> None:
        """A component with ``async start()`` and ``async close()`` that lives as long as the runtime."""
        self._services.append(service)

    def owns(self, hex_id: str) -> bool:
        """Whether this process serves the object ``hex_id`` (always, but for a worker of several)."""
        return self.router is None or self.router.is_local(hex_id)

    @property
    def first_worker(self) -> bool:
        """The one process that runs node-wide duties (cron triggers): worker 0, or the only one."""
        return self.worker is None or self.worker.index == 0

    def _lock_data_dir(self) -> None:
        if self.worker is not None:
            return  # the supervisor holds the lock for all its workers
        make_dirs_durably(self.data_dir)
        path = self.data_dir / "duro.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(f"data directory {self.data_dir} is in use by another duro process (pid {other}); "
                              "stop it or choose another --data directory") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    async def start(self) -> None:
        if self.started:
            return
        fd_limit = _raise_fd_limit()
        bound = open_database_bound(self.limits.max_open_databases, fd_limit, self.fds_per_database)
        if bound < self.limits.max_open_databases:
            log.warning("the open-file limit (%d) holds only %d open databases, not max_open_databases = %d: "
                        "fewer objects stay in memory; raise it (ulimit -n) to keep more", fd_limit, bound,
                        self.limits.max_open_databases)
        self.max_open_databases = bound
        self.open_database_ceiling = bound + OVERFLOW_FDS // self.fds_per_database
        self._lock_data_dir()
        if self.journal is not None:
            report = self.journal.open()
            if not report.clean or report.redone:
                log.warning("recovered from an unclean stop in %.2f s: %d objects redone from the journal "
                            "(%d records), %d stray WAL files removed%s", report.seconds, report.redone,
                            report.records, report.stray_removed,
                            f", {len(report.corrupt)} objects cannot start (see above)" if report.corrupt else "")
        elif (self.data_dir / "journal").exists():
            # fsync durability ran here before: bring the files in step, then drop the journal.
            recover(self.data_dir, history=self.history is not None)
            shutil.rmtree(self.data_dir / "journal", ignore_errors=True)
        try:
            self._migrate()
        except BaseException:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            raise
        self.barrier.start()
        if self.router is not None:
            await self.router.start()
        self._cpu_limited = cpulimit.install(self.limits.cpu_ms)
        self._sweeper = self.tasks.spawn(self._sweep_forever(), "duro-sweeper")
        for service in self._services:
            await service.start()
        self.started = True

    async def close(self) -> None:
        """Stop background work, commit and close every open database, release the data dir.
        Then raise what a background task crashed with, if one did (it was logged already)."""
        for service in reversed(self._services):
            try:
                await service.close()
            except Exception:
                log.exception("closing %r failed", service)
        await self.tasks.cancel(self._sweeper)
        self._sweeper = None
        # wait_until work gets a short grace period, then is cancelled: no task outlives the runtime.
        await asyncio.gather(drain_tasks(self._calls, 5.0),
                             *(a.drain(5.0) for a in list(self._activations.values())), return_exceptions=True)
        pending = [d for a in self._activations.values() if (d := a.durable_future()) is not None]
        for act in list(self._activations.values()):
            act.close(DeactivationReason.SHUTDOWN)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        self._activations.clear()
        self._evict_queue.clear()
        self._maintenance.shutdown(wait=True)
        if self.router is not None:
            await self.router.close()
        await self.barrier.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self.started = False
        self.events.close()
        if self._cpu_limited:
            self._cpu_limited = False
            cpulimit.uninstall()
        await self.tasks.stop()

    def _migrate(self) -> None:
        """Apply the migrations not applied yet to the stored data, before any object opens and
        before the alarm scheduler reads its index."""
        self._ns_keys.clear()
        if self.migrations is None or self.worker is not None:
            return  # worker processes: their supervisor applied them before starting any
        report = self.journal.report if self.journal is not None else None
        held = list(report.last) if report is not None and report.corrupt else []
        self.migrated = migrate.apply(self.data_dir, self.migrations, pending_keys=held, now_ms=self.clock.now_ms)
        for ch in self.migrated:
            log.warning("migration: %s", ch.describe())

    def namespace_key(self, unique_key: str) -> NamespaceKey:
        """What mints and checks the IDs of ``unique_key``: its own key, or the one a renamed or
        transferred namespace keeps (storage/migrate.py)."""
        key = self._ns_keys.get(unique_key)
        if key is None:
            key = self._ns_keys[unique_key] = NamespaceKey(
                unique_key, max_name_bytes=self.limits.max_name_bytes,
                id_key=migrate.id_key(self.objects_dir / unique_key))
        return key

    # ------------------------------------------------------------------ catalog
    @property
    def objects_dir(self) -> pathlib.Path:
        """Where the objects' files are: ``DATA/do/<namespace key>/<hex id>.sqlite``."""
        return self.data_dir / "do"

    def db_path(self, unique_key: str, object_id: DurableObjectId | str) -> pathlib.Path:
        return self.objects_dir / unique_key / f"{object_id}.sqlite"

    def serves(self, unique_key: str) -> bool:
        """Whether a class is registered for the namespace ``unique_key``."""
        return unique_key in self.classes

    def activation(self, unique_key: str, object_id: DurableObjectId) -> Activation:
        """Get or create the one activation for ``object_id``. Raises :class:`UnknownNamespaceError`
        if no class is registered for ``unique_key``."""
        key = (unique_key, str(object_id))
        act = self._activations.get(key)
        if act is not None and act.broken is None:
            if act.id.name is None and object_id.name is not None:
                act.id = object_id
            return act
        entry = self.classes.get(unique_key)
        if entry is None:
            raise UnknownNamespaceError(f"no class registered for namespace {unique_key!r}")
        if len(self._activations) >= self.max_open_databases and \
                self._close_lru_databases() >= self.open_database_ceiling:
            # Busy objects may pass max_open_databases by OVERFLOW_FDS worth of databases, no
            # further: another would take descriptors reserved for nobody (its commit's fsync
            # could fail after the write). Refused before anything ran; the front answers 503.
            raise OverloadedError(f"Durable Object is overloaded. Too many objects are active at once: "
                                  f"{self.open_database_ceiling} databases are open and busy, the limit "
                                  f"(max_open_databases = {self.max_open_databases} plus "
                                  f"{self.open_database_ceiling - self.max_open_databases} for bursts).")
        act = Activation(self, unique_key, object_id, entry.factory, self.db_path(unique_key, object_id))
        self._activations[key] = act
        return act

    def storage_descriptors(self) -> int:
        """The most descriptors the open databases can hold: what the front must leave free."""
        return self.open_database_ceiling * self.fds_per_database

    def find(self, unique_key: str, hex_id: str) -> Activation | None:
        return self._activations.get((unique_key, hex_id))

    def activations(self) -> list[Activation]:
        return list(self._activations.values())

    def busy(self) -> list[Activation]:
        """The activations something holds now (an event, a lock, an open transaction, a pinned or
        background task): what a code reload waits for (``cli/reload.py``)."""
        now = time.monotonic()
        return [act for act in self._activations.values() if not act.idle_at(now)]

    def forget(self, act: Activation) -> None:
        key = (act.unique_key, str(act.id))
        if self._activations.get(key) is act:
            del self._activations[key]

    def make_durable(self, path: str, *, sync_dir: bool = False) -> "asyncio.Future[None] | None":
        """Hand ``path``'s writes so far to the durability barrier (it shares the fsync with every
        object's commits). Returns a future to wait for, or None when nothing needs waiting for."""
        return self.barrier.submit(path, sync_dir=sync_dir)

    async def deliver(self, unique_key: str, object_id: DurableObjectId, event: Callable[[Any], Awaitable[T]]) -> T:
        return await self.activation(unique_key, object_id).run(event)

    # ------------------------------------------------------------------ eviction
    def _close_lru_databases(self) -> int:
        """Past the bound: choose idle databases to close, least recently used first (and used
        once before used again), down to 90 % of the bound; close as many as the bound needs now
        and the rest a few at a time in later turns of the loop (:meth:`_close_queued`). Returns
        how many stay open (or are about to open)."""
        if self._evict_queue:  # a batch chosen earlier is still being closed
            self._close_queued(EVICT_STEP)
            if len(self._activations) < self.max_open_databases:
                return len(self._activations)
        # A busy activation whose database is not open yet is about to open it: it counts.
        open_acts = [a for a in self._activations.values() if a.db.is_open or not a.is_idle]
        if len(open_acts) < self.max_open_databases:
            return len(open_acts)
        # Choose down to 90 % of the bound: the scan and sort then run once per ~10 % of new
        # activations, not on every one (a burst of alarms waking evicted objects). Closing them
        # all at once held the loop for 40-55 ms (200 closes, each touching memory idle for a
        # while); only what the bound needs now is closed here.
        excess = len(open_acts) - self.max_open_databases * 9 // 10
        needed = len(open_acts) - self.max_open_databases + 1  # closed now: the new one fits
        remaining = len(open_acts)
        self._evict_queue.clear()
        for act in self._eviction_order(open_acts):
            if excess <= 0:
                break
            if act.is_idle:
                excess -= 1
                if needed > 0:
                    act.close(DeactivationReason.IDLE)
                    self.forget(act)
                    needed -= 1
                    remaining -= 1
                else:
                    self._evict_queue.append((act, act.last_used))
        if self._evict_queue:
            try:
                asyncio.get_running_loop().call_soon(self._close_queued_soon)
            except RuntimeError:  # no loop running (a synchronous caller): close them now
                remaining -= self._close_queued(len(self._evict_queue))
        return remaining

    def _close_queued(self, n: int) -> int:
        """Close up to ``n`` of the databases chosen for eviction that are still idle and unused
        since they were chosen. Returns how many were closed."""
        closed = 0
        queue = self._evict_queue
        while queue and closed < n:
            act, used = queue.popleft()
            if act.last_used != used or not act.is_idle or self.find(act.unique_key, str(act.id)) is not act:
                continue  # used again meanwhile, busy, or gone: it stays
            act.close(DeactivationReason.IDLE)
            self.forget(act)
            closed += 1
        return closed

    def _close_queued_soon(self) -> None:
        if not self._evict_queue or not self.started:
            self._evict_queue.clear()
            return
        self._close_queued(EVICT_STEP)
        if self._evict_queue:
            asyncio.get_running_loop().call_soon(self._close_queued_soon)

    def _eviction_order(self, acts: list[Activation]) -> list[Activation]:
        """Which open objects to close first: least recently used, but objects used only once (a
        burst of new objects, alarms waking closed ones, a scan over many names) go before objects
        used again, so such a burst does not push the working set out and make every one of its
        objects open again. Objects used again may hold 80 % of the bound; the least recently used
        of those past that share go first."""
        acts.sort(key=lambda a: a.last_used)
        again = [a for a in acts if a.uses > 1]
        past_share = max(0, len(again) - self.max_open_databases * 4 // 5)
        return again[:past_share] + [a for a in acts if a.uses <= 1] + again[past_share:]

    def sweep(self, now: float | None = None) -> int:
        """Evict activations idle for longer than the idle timeout. Returns how many."""
        now = time.monotonic() if now is None else now
        evicted = 0
        for act in list(self._activations.values()):
            # Hibernation: an object whose only work is open hibernatable sockets loses its
            # instance sooner; the sockets stay open and the next event builds a new one.
            hibernating = self.hibernation.has_sockets(act.unique_key, str(act.id))
            timeout = min(self.limits.idle_timeout, self.limits.hibernation_timeout) if hibernating \
                else self.limits.idle_timeout
            if act.idle_at(now) and now - act.last_used >= timeout:
                act.close(DeactivationReason.HIBERNATION if hibernating else DeactivationReason.IDLE)
                self.forget(act)
                evicted += 1
            elif act.is_idle and now - act.last_used >= FD_IDLE_SECONDS and act.db.is_open:
                act.db.port.release_fds()
        self.hibernation.sweep(now, lambda key, hex_id: (key, hex_id) in self._activations)
        if len(self._activations) > self.max_open_databases:
            self._close_lru_databases()
        if self.journal is not None:
            self._release_journal()
        return evicted

    def _release_journal(self) -> None:
        """Sync the open objects whose records keep the journal's oldest segment alive (a closed
        object was synced when it closed), so that segment can be deleted."""
        for key in self.journal.pinning_keys():  # type: ignore[union-attr]
            parts = key.split("/")
            if len(parts) != 3 or not parts[2].endswith(".sqlite"):
                continue
            act = self._activations.get((parts[1], parts[2][:-7]))
            if act is not None and act.db.is_open and act.out_gate.txn is None:
                act.db.port.checkpoint_journaled()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.limits.sweep_interval)
            try:
                self.sweep()
            except Exception:
                log.exception("sweep failed")

    def statistics(self) -> dict[str, Any]:
        return {"activations": len(self._activations),
                "open_databases": sum(1 for a in self._activations.values() if a.db.is_open),
                "barrier": self.barrier.statistics(), "tasks": self.tasks.statistics()}
