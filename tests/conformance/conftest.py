"""The implementations the conformance suite runs against, one fixture parameter each.

A new implementation joins by adding one entry to ``BARRIERS``, ``HISTORIES``, ``JOURNALS`` (journals on
local files: the file-specific contract) or ``SHARED_JOURNALS`` (every journal, the JetStream one too)
below (as every
litestream replica client runs ``RunWithReplicaClient``): the tests themselves use only the
Protocols of :mod:`duro.storage.durability`.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import pytest

import tempfile

from duro.runtime.barrier import DurabilityBarrier
from duro.runtime.nodejournal import NodeJournal
from duro.storage import ObjectDatabase
from duro.storage.durability import Barrier
from duro.storage.journal import DAY_MS, HistoryOptions, history_path
from duro.testing import HeldBarrier

from .disk import DiskLog

# ---- barriers ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _released(barrier: HeldBarrier) -> AsyncIterator[Barrier]:
    """A HeldBarrier whose held futures a test-side task releases as soon as they are held, so it
    has to keep the contract through its own holding and releasing."""
    async def release_forever() -> None:
        while True:
            await barrier.wait_held()
            barrier.release_all()

    task = asyncio.get_running_loop().create_task(release_forever(), name="release-held-barrier")
    try:
        yield barrier
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def _plain(barrier: Barrier) -> AsyncIterator[Barrier]:
    yield barrier


# name -> a context manager that yields a started barrier on the running loop
BARRIERS: dict[str, Callable[[], contextlib.AbstractAsyncContextManager[Barrier]]] = {
    "fsync": lambda: _plain(DurabilityBarrier("fsync", threads=3)),
    "os": lambda: _plain(DurabilityBarrier("os")),
    "held": lambda: _released(HeldBarrier(DurabilityBarrier("fsync", threads=3))),
    # The node journal is also the barrier of the files it does not journal (the alarm index).
    "journal": lambda: _plain(NodeJournal(tempfile.mkdtemp(prefix="duro-journal-"))),
}


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[DiskLog]:
    """The process's fdatasync/fsync calls, recorded (the real calls still run)."""
    log = DiskLog().install(monkeypatch)
    try:
        yield log
    finally:
        log.unblock()  # never leave a worker thread waiting in a held fdatasync


@pytest.fixture(params=sorted(BARRIERS))
async def barrier(request: pytest.FixtureRequest, disk: DiskLog) -> AsyncIterator[Barrier]:
    async with BARRIERS[request.param]() as b:
        b.start()
        try:
            yield b
        finally:
            disk.unblock()
            await asyncio.wait_for(b.close(), 30)


# ---- histories -----------------------------------------------------------------------------------


class FakeClock:
    """Epoch milliseconds that move only when the test says so."""

    def __init__(self, ms: int = 1_700_000_000_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


@dataclass
class HistoryCase:
    """One history implementation on real files: ``open(path, offload=None)`` opens the object's
    database with that history (``db.attached_history()`` is the history under test; ``offload``
    runs the end of ``close(offload=True)``, where the history is handed off); ``tear(path)`` damages
    the history's tail as a power loss in the middle of an append would; ``files(path)`` are the
    files whose sync makes its records durable."""

    clock: FakeClock
    options: HistoryOptions
    open: Callable[..., ObjectDatabase]
    tear: Callable[[pathlib.Path], None]
    files: Callable[[pathlib.Path], list[pathlib.Path]]


def _tear_history_file(db_path: pathlib.Path) -> None:
    hp = history_path(db_path)
    with open(hp, "r+b") as f:
        f.truncate(hp.stat().st_size - 10)  # the last record loses its end


def _history_file(clock: FakeClock) -> HistoryCase:
    options = HistoryOptions(retention_ms=30 * DAY_MS, now_ms=clock)
    def open_db(path: pathlib.Path, offload: Callable[[Callable[[], None]], None] | None = None) -> ObjectDatabase:
        return ObjectDatabase(path, history=options, offload=offload)

    return HistoryCase(clock, options, open_db, _tear_history_file, lambda path: [history_path(path)])


HISTORIES: dict[str, Callable[[FakeClock], HistoryCase]] = {
    "history-file": _history_file,
}


@pytest.fixture(params=sorted(HISTORIES))
def history_case(request: pytest.FixtureRequest) -> HistoryCase:
    return HISTORIES[request.param](FakeClock())


# ---- journals ------------------------------------------------------------------------------------


@dataclass
class JournalCase:
    """One journal implementation over a data directory: ``make()`` builds it (not yet opened) on
    ``data_dir``; ``segments()`` lists the files that hold its records, oldest first (for the
    torn-tail and damage cases)."""

    data_dir: pathlib.Path
    make: Callable[[], NodeJournal]
    segments: Callable[[], list[pathlib.Path]]


def _node_journal(data_dir: pathlib.Path) -> JournalCase:
    from duro.storage.journalfile import segment_paths
    return JournalCase(data_dir, lambda: NodeJournal(data_dir, segment_bytes=64 << 10),
                       lambda: segment_paths(data_dir / "journal"))


JOURNALS: dict[str, Callable[[pathlib.Path], JournalCase]] = {
    "node": _node_journal,
}


@pytest.fixture(params=sorted(JOURNALS))
def journal_case(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> JournalCase:
    return JOURNALS[request.param](tmp_path / "data")


# ---- the journal's shared contract ----------------------------------------------------------------
# Every implementation of the commit journal, behind the small test-side interface of journals.py.


@pytest.fixture(scope="session")
def nats_server() -> Iterator[list[str]]:
    """One real nats-server (sync_interval: always) for the JetStream journal, started only when a
    test needs it."""
    pytest.importorskip("nats", reason="the JetStream journal needs the cluster extra (nats-py)")
    from duro.cluster.testing import NatsServers

    with NatsServers(1) as servers:
        yield servers.urls


def _node_under_test(request: pytest.FixtureRequest, tmp: pathlib.Path):
    from .journals import NodeJournalUnderTest
    return NodeJournalUnderTest(tmp / "data")


def _jetstream_under_test(request: pytest.FixtureRequest, tmp: pathlib.Path):
    from .journals import JetStreamJournalUnderTest
    return JetStreamJournalUnderTest(request.getfixturevalue("nats_server"), replicas=1)


SHARED_JOURNALS = {
    "node": _node_under_test,
    "jetstream": _jetstream_under_test,
}


@pytest.fixture(params=sorted(SHARED_JOURNALS))
async def any_journal(request: pytest.FixtureRequest, tmp_path: pathlib.Path):
    impl = SHARED_JOURNALS[request.param](request, tmp_path)
    await impl.start()
    try:
        yield impl
    finally:
        await asyncio.wait_for(impl.close(), 30)
