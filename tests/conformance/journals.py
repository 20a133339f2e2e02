"""The commit journal's implementations behind one small test-side interface, for the shared
contract (``test_journal_shared_contract.py``): the node journal (segment files, fdatasync) and the
JetStream journal (a real nats-server). What differs between them is only how a test provokes a
fault: a torn write is a cut segment on disk, and an unanswered append on the server; a damaged
record is flipped bytes in a segment, and a record that fails its checksum in the stream.

Object keys here are plain names (``a``, ``b``); each implementation maps them to its own (a
database path; a key of this run, so tests on one server never meet)."""

from __future__ import annotations

import asyncio
import pathlib
import uuid
from typing import Any

from duro.runtime.nodejournal import NodeJournal
from duro.storage.journalfile import Capture, segment_paths

__all__ = ["NodeJournalUnderTest", "JetStreamJournalUnderTest"]


class NodeJournalUnderTest:
    name = "node"

    def __init__(self, data_dir: pathlib.Path) -> None:
        self.data_dir = data_dir
        self.j: NodeJournal | None = None

    def _key(self, key: str) -> str:
        return f"do/ns/{key}.sqlite"

    async def start(self) -> None:
        self.j = NodeJournal(self.data_dir, segment_bytes=64 << 10)
        self.report = self.j.open()
        self.j.start()

    def append(self, key: str, capture: Capture) -> asyncio.Future[None]:
        assert self.j is not None
        return self.j.append(self._key(key), capture)

    async def read(self, key: str, after: int = 0) -> list[tuple[int, Capture]]:
        assert self.j is not None
        return self.j.read(self._key(key), after)

    def _crash(self) -> None:
        j = self.j
        assert j is not None and j._thread is not None
        j._closing = True  # a crash: no CLEAN marker, the writer thread simply stops
        with j._cond:
            j._cond.notify_all()
        j._thread.join()
        self.j = None

    async def restart(self, *, crash: bool = False) -> None:
        if self.j is not None:
            if crash:
                self._crash()
            else:
                await self.j.close()
        await self.start()

    async def lose_tail(self, key: str, capture: Capture) -> None:
        """The power went out while ``capture``'s record was being written: its fdatasync never
        returned, so it was never acknowledged, and the segment holds part of it."""
        await self.append(key, capture)
        self._crash()
        seg = segment_paths(self.data_dir / "journal")[-1]
        with open(seg, "r+b") as f:
            f.truncate(seg.stat().st_size - 100)

    async def damage(self, key: str, capture: Capture) -> None:
        """Bit rot inside ``capture``'s record (already in the journal), found at the next start."""
        self._crash()
        seg = segment_paths(self.data_dir / "journal")[-1]
        data = bytearray(seg.read_bytes())
        at = data.find(capture.pages[min(capture.pages)][4000:4096])
        assert at > 0
        data[at + 10] ^= 0xFF
        seg.write_bytes(bytes(data))

    async def state(self, key: str) -> bytes:
        """The object's database file as the journal gives it to a new instance."""
        return (self.data_dir / self._key(key)).read_bytes()

    async def check(self, key: str) -> None:
        assert self.j is not None
        self.j.link(self.data_dir / self._key(key)).check_open()

    async def retain(self, key: str) -> None:
        """The object's file now holds every acknowledged record, durably: they may be dropped."""
        assert self.j is not None
        link = self.j.link(self.data_dir / self._key(key))
        link.synced(link.position(), durable=True)

    async def close(self) -> None:
        if self.j is not None:
            await self.j.close()
            self.j = None


class JetStreamJournalUnderTest:
    """A node of its own on a shared nats-server: it owns every object it appends to (taking it
    over on first use), and a restart is a new node taking them over."""

    name = "jetstream"

    def __init__(self, urls: list[str], replicas: int) -> None:
        self.urls = urls
        self.replicas = replicas
        self.run = uuid.uuid4().hex[:10]
        self.generation = 0
        self.nc: Any = None
        self.logs: dict[str, Any] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _key(self, key: str) -> str:
        return f"{self.run}-{key}"

    async def start(self) -> None:
        import nats

        from duro.cluster.journal import JetStreamJournal
        from duro.cluster.leases import LeaseOptions, Leases, NodeRegistry

        self.nc = await nats.connect(self.urls)
        js = self.nc.jetstream(timeout=5)
        self.generation += 1
        self.reg = NodeRegistry(js, f"{self.run}-g{self.generation}", LeaseOptions(replicas=self.replicas))
        await self.reg.register()
        self.leases = await Leases(self.reg).open()
        self.journal = await JetStreamJournal(js, replicas=self.replicas).open()
        self.logs = {}
        self._locks = {}

    async def _log(self, key: str) -> Any:
        if key not in self.logs:
            lease = await self.leases.claim(self._key(key))
            self.logs[key] = await self.journal.take(lease, self.reg)
        return self.logs[key]

    def append(self, key: str, capture: Capture) -> asyncio.Future[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())

        async def go() -> None:
            async with lock:  # FIFO: the object's commits are appended in call order
                fut = (await self._log(key)).append(capture)
            await fut

        return asyncio.ensure_future(go())

    async def read(self, key: str, after: int = 0) -> list[tuple[int, Capture]]:
        return await self.journal.read_commits(self._key(key), after)

    async def _stop(self, *, crash: bool) -> None:
        if crash:
            # The node is gone without a word: its registration is removed as the server's TTL
            # would (after seconds) so that the test need not wait for it.
            await self.reg.close(deregister=True)
        else:
            for olog in self.logs.values():
                await self.leases.release(olog.lease)
            await self.reg.close()
        await self.nc.close()
        self.nc = None

    async def restart(self, *, crash: bool = False) -> None:
        if self.nc is not None:
            await self._stop(crash=crash)
        await self.start()

    async def lose_tail(self, key: str, capture: Capture) -> None:
        """An append the server stored but whose answer never reached the owner, which then died:
        the record is wholly there (or, had the server not stored it, wholly absent)."""
        from duro.storage.journalfile import encode_commit

        olog = await self._log(key)
        record = encode_commit(capture.seq, olog.lease.epoch, olog.key.encode(), capture)
        await self.journal.js.publish(self.journal.subject(olog.key), olog._head + record, headers=olog.headers())
        await self._stop(crash=True)

    async def damage(self, key: str, capture: Capture) -> None:
        """A record of the object that fails its checksum, in the object's chain (stored messages
        cannot be changed: the damage arrives as a message whose record bytes rotted)."""
        from duro.storage.journalfile import encode_commit

        olog = await self._log(key)
        record = bytearray(encode_commit(capture.seq, olog.lease.epoch, olog.key.encode(), capture))
        record[-10] ^= 0xFF
        await olog._send([bytes(record)])
        await self._stop(crash=True)

    async def state(self, key: str) -> bytes:
        """The object's database file as the journal gives it to a new instance (its owner's
        rebuild: snapshot, then every record after it)."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="duro-state-") as tmp:
            return (await self._log(key)).materialize(tmp, "o.sqlite").read_bytes()

    async def check(self, key: str) -> None:
        await self.journal.rebuild(self._key(key))

    async def retain(self, key: str) -> None:
        """The object's file, holding every acknowledged record, goes to the snapshot store: a
        take-over starts from it, and the records before it are no longer read."""
        olog = await self._log(key)
        await olog.snapshot(b"snapshot")

    async def close(self) -> None:
        if self.nc is not None:
            await self._stop(crash=False)
