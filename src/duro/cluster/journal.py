"""The commit journal on JetStream: the cluster's implementation of the journal (DESIGN.md §3, §5).

Each object's commits go to its own subject ``duro.j.<key>`` of one replicated stream (R=3 on a
cluster, file storage, the servers fsync before they acknowledge). A message holds the SHA-256 of
the previous message of the subject (a hash chain) and then whole journal records in the node
journal's format (:mod:`duro.storage.journalfile`, each checksummed): COMMIT records (lsn: the
object's commit sequence; prev: the owner's fencing token) or one EPOCH record (lsn: the token).

**Fencing.** Every append carries ``Nats-Expected-Last-Subject-Sequence`` (the last sequence this
owner knows) and ``Nats-Msg-Id`` ``<key>:<epoch>:<last>:<handle>`` (``handle`` tells two take-overs
by one lease apart: an append of an abandoned handle that lands late never passes for the next
one's): once a new owner has appended its EPOCH
record, the server rejects everything the old owner still sends (err 10071), whatever the clocks
say. A "wrong last sequence" answer is ambiguous (reference/cluster-on-nats.md §1.5) and is resolved
by reading the subject's last message: our Msg-Id there means the append succeeded, an unchanged
tail means retry, anything else means this owner is fenced (:class:`FencedError`, retryable: the
object lives on at its new owner). A timeout is retried with the same headers (the server's
duplicate window answers a retry of an append that did land with the same sequence).

**Large commits.** A message holds at most what the servers accept (their ``max_payload``, 1 MB by
default). A larger batch is appended as consecutive *parts*, each a fenced message of its own in the
chain, with the header ``Duro-Part: more`` on every part but the last and ``Duro-Part: last`` on
the last; the batch is acknowledged once its last part is. A reader joins the parts before it
decodes the records; parts with no last part after them (their owner died or was fenced between
two parts: nothing of them was acknowledged) are dropped, whether the log ends there or another
message (the next owner's EPOCH record) follows.

**Group commit.** One append per object is in flight at a time (the next one must name the
sequence the previous one got); commits made meanwhile ride the next message together. Appends of
different objects are in flight at once.

**Take-over.** :meth:`JetStreamJournal.take` downloads the object's latest snapshot (JetStream
object store ``duro_snap``), reads every message after it up to the tail the stream's leader
reports (one ephemeral pull consumer, in batches) verifying the chain and each record's checksum,
then appends its EPOCH record against the tail it read, and only then hands back the
:class:`ObjectLog` that serves writes.

Never: acknowledge a commit before the server did, append without the expected-sequence header, or
serve an object whose chain does not verify.
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
import uuid
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, ObjectStoreConfig, StorageType, StreamConfig

from ..errors import CorruptDatabaseError, StorageError
from ..runtime.metrics import Histogram
from ..storage.paths import history_path, marker_path
from ..storage.journalfile import COMMIT, EPOCH, Capture, JournalRecord, decode_records, encode_commit, \
    encode_record, redo
from .leases import NO_PEERS_YET, TRANSIENT_ERRORS, Lease, NodeRegistry

__all__ = ["JetStreamJournal", "ObjectLog", "FencedError", "ChainBrokenError", "STREAM", "SNAP_BUCKET"]

log = logging.getLogger("duro.cluster")

STREAM = "DURO_JOURNAL"
SUBJECTS = "duro.j"
SNAP_BUCKET = "duro_snap"
RETENTION_S = 31 * 86400
_WRONG_LAST = (10071, 10164)
_ZERO = bytes(32)
_SNAP_HEAD = 8 + 32  # a snapshot: last sequence it covers (u64 big-endian), chain hash there, then the files
_SNAP_FILES = b"DSN2"  # then: database length (u64 big-endian), the database, the history (module doc)
PART_HEADER = "Duro-Part"  # "more" on every part of a large append but its last, "last" on it (module doc)
_HEADROOM = 4096  # of max_payload, for the headers and the chain hash (the server counts both)


class FencedError(StorageError):
    """This owner's append was refused because another owner took the object over (its EPOCH
    record is in the stream). The commits of this append are not durable and never will be; the
    object must be dropped here. Retryable for a client: the new owner serves the object."""

    retryable = True


class ChainBrokenError(CorruptDatabaseError):
    """The object's records in the stream do not form one chain (a record lost or changed), or one
    fails its checksum: the object is not served (it would silently diverge); every other object
    keeps working."""


def _digest(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest()


@dataclass
class Rebuilt:
    """What a take-over read: the snapshot (file bytes, or None) and the COMMIT records after it."""

    snapshot: bytes | None = None
    history: bytes | None = None  # the object's history file as the snapshot holds it (None: none)
    snapshot_seq: int = 0
    records: list[JournalRecord] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # the stream sequence of each record's message
    messages: int = 0
    epochs: list[int] = field(default_factory=list)  # the EPOCH records seen, in order


class JetStreamJournal:
    """The stream and snapshot bucket on one NATS connection's JetStream context ``js``."""

    def __init__(self, js: Any, *, replicas: int = 3, timeout: float = 5.0, retry_for: float = 12.0,
                 max_payload: int | None = None, duplicate_window: float = 120.0) -> None:
        self.js = js
        self.duplicate_window = duplicate_window  # seconds the servers answer a retried append with its first ack
        self.replicas = replicas
        self.timeout = timeout  # one request
        self.retry_for = retry_for  # an append keeps retrying (timeouts, elections) this long
        # The largest message the servers take (their INFO says; 1 MB by default): larger appends go in parts.
        self.max_payload = max_payload or getattr(getattr(js, "_nc", None), "max_payload", 0) or 1 << 20
        self._snaps: Any = None
        self.appends = 0
        # Seconds from the first send of an append to the servers' acknowledgement (retries included).
        self.append_seconds = Histogram("duro_cluster_journal_append_seconds", "Time from sending a journal "
                                        "append to NATS to its acknowledgement (replicated and fsync'd), retries "
                                        "included.")
        self.retries = 0

    async def open(self) -> "JetStreamJournal":
        """Create the stream and the snapshot bucket when missing (a new cluster may still be
        electing: retried for a bounded time)."""
        config = StreamConfig(name=STREAM, subjects=[f"{SUBJECTS}.>"], storage=StorageType.FILE,
                              num_replicas=self.replicas, max_age=RETENTION_S,
                              duplicate_window=self.duplicate_window,
                              deny_delete=True)
        deadline = time.monotonic() + self.retry_for
        while True:
            try:
                try:
                    await self.js.add_stream(config)
                except nats.js.errors.APIError as e:
                    if isinstance(e, TRANSIENT_ERRORS):
                        raise
                    if e.err_code == NO_PEERS_YET and time.monotonic() < deadline:
                        await asyncio.sleep(0.2)  # a new cluster's servers still meeting
                        continue
                    if e.err_code != 10058:  # "already in use with a different configuration"
                        raise StorageError(f"cannot create the journal stream {STREAM!r} ({self.replicas} "
                                           f"replicas): {e.description or e}") from e
                    await self.js.stream_info(STREAM)  # another node made it with other options: use it
                try:
                    self._snaps = await self.js.object_store(SNAP_BUCKET)
                except nats.js.errors.BucketNotFoundError:
                    try:
                        self._snaps = await self.js.create_object_store(
                            SNAP_BUCKET, ObjectStoreConfig(storage=StorageType.FILE, replicas=self.replicas))
                    except nats.js.errors.APIError as e:
                        if isinstance(e, TRANSIENT_ERRORS):
                            raise
                        if e.err_code == NO_PEERS_YET and time.monotonic() < deadline:
                            await asyncio.sleep(0.2)  # the stream found its peers; the bucket not yet
                            continue
                        raise StorageError(f"cannot create the snapshot bucket {SNAP_BUCKET!r} ({self.replicas} "
                                           f"replicas): {e.description or e}") from e
                return self
            except TRANSIENT_ERRORS:
                if time.monotonic() > deadline:
                    raise StorageError("JetStream did not answer while creating the journal stream "
                                       f"{STREAM!r}; is JetStream enabled on the servers?") from None
                await asyncio.sleep(0.1)

    def subject(self, key: str) -> str:
        return f"{SUBJECTS}.{key}"

    async def tail(self, key: str) -> tuple[int, str | None]:
        """(sequence, Msg-Id) of the object's last message, (0, None) for none."""
        try:
            msg = await self.js.get_last_msg(STREAM, self.subject(key))
        except nats.js.errors.NotFoundError:
            return 0, None
        return msg.seq, (msg.headers or {}).get("Nats-Msg-Id")

    async def read(self, key: str, after: int = 0, *,
                   chain: bytes | None = None) -> tuple[list[tuple[int, bytes, str]], bytes]:
        """The object's messages after sequence ``after`` as (seq, payload, part: "" for a whole
        append, else "more" or "last"), checking the hash chain from ``chain`` (the hash at
        ``after``; None: do not check the first link), and the chain's hash at the end.
        ChainBrokenError if a link does not hold."""
        out: list[tuple[int, bytes, str]] = []
        head = chain
        tail, _ = await self.tail(key)  # read from the stream's leader: everything up to here must come
        if tail > after:
            # One ephemeral pull consumer on the object's subject, read in batches up to the tail.
            sub = await self.js.pull_subscribe(
                self.subject(key), stream=STREAM,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1,
                                      ack_policy=AckPolicy.NONE, inactive_threshold=30.0, num_replicas=1,
                                      mem_storage=True))
            try:
                deadline = time.monotonic() + self.retry_for
                last = after
                while last < tail:
                    try:
                        batch = await sub.fetch(512, timeout=min(self.timeout, 2.0))
                    except nats.errors.TimeoutError:
                        if time.monotonic() > deadline:
                            raise StorageError(f"object {key}: reading its journal stalled at {last} of {tail}") from None
                        continue
                    for msg in batch:
                        seq = msg.metadata.sequence.stream
                        if seq <= last or seq > tail:
                            continue
                        payload = msg.data or b""
                        if len(payload) < 32:
                            raise ChainBrokenError(f"object {key}: journal message {seq} is too short to be a record")
                        if head is not None and payload[:32] != head:
                            raise ChainBrokenError(f"object {key}: journal message {seq} does not follow the one "
                                                   "before it (its hash chain is broken: a record was lost or "
                                                   "changed); the object is not served. Restore it from a bookmark")
                        head = _digest(payload)
                        out.append((seq, payload, (msg.headers or {}).get(PART_HEADER, "")))
                        last = seq
            finally:
                with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                    await sub.unsubscribe()
        return out, head if head is not None else (chain or _ZERO)

    async def _snapshot(self, key: str) -> tuple[int, bytes, bytes | None, bytes | None]:
        """(sequence it covers, chain hash there, database file, history file) of the object's
        latest snapshot; (0, zero hash, None, None) for none."""
        try:
            got = await self._snaps.get(key)
        except nats.js.errors.ObjectNotFoundError:
            return 0, _ZERO, None, None
        data = got.data
        if len(data) < _SNAP_HEAD:
            raise ChainBrokenError(f"object {key}: its snapshot is {len(data)} bytes, too short")
        seq, chain, files = int.from_bytes(data[:8], "big"), data[8:_SNAP_HEAD], data[_SNAP_HEAD:]
        if not files.startswith(_SNAP_FILES):
            return seq, chain, files, None  # a database file alone
        at = len(_SNAP_FILES) + 8
        size = int.from_bytes(files[len(_SNAP_FILES):at], "big")
        if len(files) < at + size:
            raise ChainBrokenError(f"object {key}: its snapshot is cut short ({len(files)} bytes)")
        return seq, chain, files[at:at + size], files[at + size:] or None

    async def rebuild(self, key: str) -> tuple[Rebuilt, int, bytes]:
        """The object's state as the stream holds it (snapshot + records, chain verified), the last
        sequence read and the chain hash there. Retried while NATS does not answer (an election),
        for ``retry_for`` seconds."""
        deadline = time.monotonic() + self.retry_for
        while True:
            try:
                return await self._rebuild_once(key)
            except TRANSIENT_ERRORS as e:
                if time.monotonic() > deadline:
                    raise StorageError(f"object {key}: its journal could not be read within {self.retry_for:.0f} s "
                                       f"({type(e).__name__})") from e
                await asyncio.sleep(0.1)

    async def _rebuild_once(self, key: str) -> tuple[Rebuilt, int, bytes]:
        snap_seq, snap_hash, snap, history = await self._snapshot(key)
        msgs, head = await self.read(key, snap_seq, chain=snap_hash if snap_seq else _ZERO)
        got = Rebuilt(snapshot=snap, history=history, snapshot_seq=snap_seq, messages=len(msgs))
        parts: list[bytes] = []  # the parts read so far of a large append (module doc)
        for seq, payload, part in msgs:
            if part == "more":
                parts.append(payload[32:])
                continue
            body = payload[32:]
            if part == "last":
                body = b"".join(parts) + body
            elif parts:
                # Parts whose last never came, then another owner's message: never acknowledged.
                log.warning("object %s: dropped an unfinished large append before stream message %d", key, seq)
            parts = []
            try:
                records = decode_records(body, f"{STREAM}:{seq}")
            except StorageError as e:
                raise ChainBrokenError(f"object {key}: {e}; the object is not served. Restore it from a "
                                       "bookmark") from e
            for r in records:
                if r.kind == COMMIT:
                    got.records.append(r)
                    got.positions.append(seq)
                elif r.kind == EPOCH:
                    got.epochs.append(r.lsn)
        if parts:
            log.warning("object %s: dropped an unfinished large append at the end of its log", key)
        return got, (msgs[-1][0] if msgs else snap_seq), head

    async def read_commits(self, key: str, after: int = 0) -> list[tuple[int, Capture]]:
        """The object's commits after stream sequence ``after`` as (sequence, Capture), from its
        latest snapshot on (what a take-over would redo), chain verified."""
        got, _, _ = await self.rebuild(key)
        return [(seq, r.capture()) for seq, r in zip(got.positions, got.records) if seq > after]

    async def take(self, lease: Lease, registry: NodeRegistry | None) -> ObjectLog:
        """Take object ``lease.key`` over: rebuild, then append the EPOCH record; after that the
        previous owner can append nothing. ``registry`` (None only to prove the server's fencing
        alone) self-fences every append."""
        deadline = time.monotonic() + self.retry_for
        while True:
            got, last, head = await self.rebuild(lease.key)
            olog = ObjectLog(self, lease, registry, last, head, got)
            try:
                await olog._send([encode_record(EPOCH, lease.epoch, 0, lease.key.encode(), lease.node.encode())])
                return olog
            except TRANSIENT_ERRORS:  # the tail could not be read to resolve an ambiguous answer
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
            except FencedError:
                # Records landed after we read (the previous owner's last ones): read them too.
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.01)

    async def put_snapshot(self, key: str, seq: int, chain: bytes, data: bytes, history: bytes | None = None) -> None:
        """Store the object's files (its database, and its history when it keeps one) as its
        snapshot at stream sequence ``seq`` (chain hash ``chain`` there)."""
        files = data if history is None else b"".join((_SNAP_FILES, len(data).to_bytes(8, "big"), data, history))
        await self._snaps.put(key, seq.to_bytes(8, "big") + chain + files)


class ObjectLog:
    """One owner's handle on one object's records, fenced by the lease's epoch: the cluster's
    :class:`~duro.storage.durability.JournalLink`. The stream is the durability source and keeps
    every record for the retention window, so what the object's file holds (``written``,
    ``synced``) only tells which snapshot could be taken; ``recover`` takes the object again and
    redoes its file (``bind`` names the file)."""

    def __init__(self, journal: JetStreamJournal, lease: Lease, registry: NodeRegistry | None,
                 last: int, head: bytes, rebuilt: Rebuilt) -> None:
        self.journal = journal
        self.lease = lease
        self.key = lease.key
        self.registry = registry
        self.rebuilt = rebuilt
        self._last = last  # stream sequence of the last message we know (ours or read)
        self._head = head  # chain hash at _last
        self._queue: list[tuple[bytes, asyncio.Future[None]]] = []
        self._sending: list[tuple[bytes, asyncio.Future[None]]] = []  # the batch the flight is sending
        self._flight: asyncio.Task[None] | None = None
        # Sticky: after a failed append the outcome may be unknown (it may land later, under the
        # same Msg-Id a next append would carry), so nothing more is appended through this handle;
        # the object resets and its owner takes it again (a new rebuild reads what did land).
        self._broken: BaseException | None = None
        self._handle = uuid.uuid4().hex[:12]
        self._durable = threading.Condition()
        self._acked = last
        self._loop = asyncio.get_running_loop()
        self._file: tuple[pathlib.Path, str] | None = None
        self.file_through = 0  # the object's file holds every record up to here (written or synced)
        self.messages = 0
        self.snapshots = 0  # snapshots this handle stored
        # Messages since the snapshot a take-over would start from (what it would have to replay).
        self.messages_since_snapshot = rebuilt.messages
        self.snapshot_at = time.monotonic()  # (of the snapshot a take-over would start from: "now" will do)

    # ---- the JournalLink side
    def append(self, capture: Capture) -> asyncio.Future[None]:
        """Append one commit; the future resolves once the stream acknowledged it (replicated and
        fsync'd), or fails: FencedError (another owner took over), SelfFencedError (this node may
        not write) or StorageError. After a failure every later append fails the same way: the
        object must reset, and its owner take it again (:meth:`JetStreamJournal.take`)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if self._broken is not None:
            fut.set_exception(self._broken)
            return fut
        self._queue.append((encode_commit(capture.seq, self.lease.epoch, self.key.encode(), capture), fut))
        if self._flight is None:
            self._flight = loop.create_task(self._drain(), name=f"duro-append-{self.key}")
        return fut

    def position(self) -> int:
        """The stream sequence of this object's last acknowledged message."""
        return self._acked

    def wait_durable(self, lsn: int) -> bool:
        """Block (another thread) until the message at ``lsn`` settled; True if it is durable."""
        with self._durable:
            self._durable.wait_for(lambda: self._acked >= lsn or self._broken is not None, timeout=60)
            return self._acked >= lsn

    def written(self, through: int) -> None:
        """The object's file holds every record up to ``through`` (not yet synced)."""
        self.file_through = max(self.file_through, through)

    def synced(self, through: int, *, durable: bool = False) -> None:
        """The object's file holds every record up to ``through`` on stable storage. Nothing is
        dropped for it: the stream keeps records for the retention window (a snapshot shortens
        the next rebuild)."""
        self.file_through = max(self.file_through, through)

    def bind(self, data_dir: str | os.PathLike[str], relpath: str) -> None:
        """The object's database file, which :meth:`recover` redoes."""
        self._file = (pathlib.Path(data_dir), relpath)

    def recover(self) -> None:
        """After a failed append (blocking; from a thread other than the event loop's): take the
        object again (rebuild what the stream holds, which includes a failed append that landed
        after all, then a new EPOCH record) and redo its file from it. FencedError if another
        owner has it now."""
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            raise RuntimeError("ObjectLog.recover blocks: call it from another thread (asyncio.to_thread)")
        asyncio.run_coroutine_threadsafe(self._retake(), self._loop).result(self.journal.retry_for * 2 + 10)
        if self._file is not None:
            self.materialize(*self._file)

    async def _retake(self) -> None:
        while self._flight is not None:
            await asyncio.sleep(0.005)
        if isinstance(self._broken, FencedError):
            raise self._broken
        got, last, head = await self.journal.rebuild(self.key)
        self.rebuilt, self._last, self._head = got, last, head
        self.messages_since_snapshot = got.messages
        self._handle = uuid.uuid4().hex[:12]
        self._broken = None
        try:
            await self._send([encode_record(EPOCH, self.lease.epoch, 0, self.key.encode(), self.lease.node.encode())])
        except BaseException as e:
            self._broken = e
            raise

    def check_open(self) -> None:
        """Raise FencedError if the object moved to another owner; recover first if a failed
        append left it behind."""
        if isinstance(self._broken, FencedError):
            raise self._broken
        if self._broken is not None:
            self.recover()

    async def _drain(self) -> None:
        try:
            while self._queue and self._broken is None:
                batch, self._queue = self._queue, []
                self._sending = batch
                try:
                    await self._send([rec for rec, _ in batch])
                except BaseException as e:
                    err = e if isinstance(e, StorageError) or getattr(e, "retryable", False) else \
                        StorageError(f"object {self.key}: the journal append failed: {e!r}")
                    self._broken = err
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(err)
                    if isinstance(e, asyncio.CancelledError):
                        raise
                    continue
                for _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)
            if self._broken is not None:
                for _, fut in self._queue:
                    if not fut.done():
                        fut.set_exception(self._broken)
                self._queue = []
        finally:
            self._sending = []
            self._flight = None

    def abandon(self, error: BaseException) -> None:
        """This owner stops here (it self-fenced, or the object moved): every append not yet
        acknowledged fails with ``error`` now, not when its send gives up (a send to servers that
        no longer answer is retried for ``retry_for``). Their outcome is unknown, as after a
        timeout: a send under way may still land, which a retryable ``error`` tells the caller.
        Nothing more is appended through this handle."""
        if self._broken is None:
            self._broken = error
        for _, fut in self._sending + self._queue:
            if not fut.done():
                fut.set_exception(error)
        self._queue = []
        with self._durable:
            self._durable.notify_all()

    def headers(self) -> dict[str, str]:
        """The headers the next append carries (a retry of it carries the same)."""
        return {"Nats-Expected-Last-Subject-Sequence": str(self._last),
                "Nats-Msg-Id": f"{self.key}:{self.lease.epoch}:{self._last}:{self._handle}"}

    async def _send(self, records: list[bytes]) -> int:
        """One fenced append of ``records`` (module doc: in parts if it is larger than a message
        may be); returns the sequence of its (last) message."""
        body = b"".join(records)
        room = max(self.journal.max_payload - 32 - _HEADROOM, 1024)
        if len(body) <= room:
            return await self._send_one(body, "")
        for at in range(0, len(body) - room, room):
            await self._send_one(body[at:at + room], "more")
        return await self._send_one(body[at + room:], "last")

    async def _send_one(self, body: bytes, part: str) -> int:
        """One fenced message (``part``: "", or "more"/"last" of a large append); returns its
        sequence. Only a whole append, or the last part of one, counts as acknowledged."""
        payload = self._head + body
        headers = self.headers()
        if part:
            headers[PART_HEADER] = part
        msg_id = headers["Nats-Msg-Id"]
        subject = self.journal.subject(self.key)
        started = time.monotonic()
        deadline = started + self.journal.retry_for
        while True:
            if self.registry is not None:
                self.registry.check()
            try:
                ack = await self.journal.js.publish(subject, payload, headers=headers, timeout=self.journal.timeout)
                seq = ack.seq
                break
            except TRANSIENT_ERRORS as e:  # before APIError: a 503 is one (an election under way)
                self.journal.retries += 1
                if time.monotonic() > deadline:
                    raise StorageError(f"object {self.key}: the journal did not acknowledge an append within "
                                       f"{self.journal.retry_for:.0f} s ({type(e).__name__}); the commit is not durable") from e
            except nats.js.errors.APIError as e:
                if e.err_code not in _WRONG_LAST:
                    raise StorageError(f"object {self.key}: the journal refused an append: {e}") from e
                tail, tail_id = await self.journal.tail(self.key)
                if tail_id == msg_id:
                    seq = tail  # it had landed: the answer was lost or spurious
                    break
                if tail != self._last:
                    raise FencedError(f"object {self.key} moved to another owner (the journal's last record is "
                                      f"{tail}, this owner knew {self._last}); retry: the new owner serves it") from e
                self.journal.retries += 1  # a spurious rejection with the tail unchanged
            await asyncio.sleep(0.02)
        self._last = seq
        self._head = _digest(payload)
        self.journal.appends += 1
        self.journal.append_seconds.observe(time.monotonic() - started)
        self.messages += 1
        self.messages_since_snapshot += 1
        if part == "more":
            return seq
        with self._durable:
            self._acked = seq
            self._durable.notify_all()
        return seq

    # ---- snapshots and materialising
    async def snapshot(self, data: bytes, history: bytes | None = None) -> int:
        """Store ``data`` (the object's database file, holding every commit acknowledged so far)
        and ``history`` (its history file, in step with it) as the object's snapshot at the
        current position; a take-over starts from it."""
        if self._flight is not None or self._queue:
            raise StorageError(f"object {self.key}: a snapshot needs its appends settled first")
        await self.journal.put_snapshot(self.key, self._acked, self._head, data, history)
        self.snapshot_taken(self.messages)
        return self._acked

    def snapshot_taken(self, messages: int) -> None:
        """A snapshot was stored as of when this handle had appended ``messages`` messages."""
        self.snapshots += 1
        self.messages_since_snapshot = self.messages - messages
        self.snapshot_at = time.monotonic()

    def materialize(self, data_dir: str | os.PathLike[str], relpath: str) -> pathlib.Path:
        """Write the rebuilt state to ``data_dir/relpath``: the snapshot's database, then every
        COMMIT record after it; and the object's history: the snapshot's, then a record for each
        commit after it (records carry the commit numbers their first owner gave them, so a
        bookmark means the same state on every node). Whatever this node kept of the object from
        an earlier ownership (its history, a restore it had scheduled) is replaced."""
        db = pathlib.Path(data_dir) / relpath
        db.parent.mkdir(parents=True, exist_ok=True)
        hist = history_path(db)
        marker_path(db).unlink(missing_ok=True)
        if self.rebuilt.snapshot is not None:
            db.write_bytes(self.rebuilt.snapshot)
        else:
            db.unlink(missing_ok=True)
        if self.rebuilt.history is not None:
            hist.write_bytes(self.rebuilt.history)
        else:
            hist.unlink(missing_ok=True)
        redo(pathlib.Path(data_dir), relpath, self.rebuilt.records, history=True)
        return db
