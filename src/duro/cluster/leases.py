"""Node registration and object leases on JetStream key-value buckets (DESIGN.md §5).

- A node registers ``duro_nodes.<node>`` with a per-key TTL (``create``: a second node with the same
  name is refused) and renews it with a compare-and-swap on its revision. A node that has not
  completed a renewal within ``ttl - margin``, counted on its monotonic clock from the *send* time
  of its last successful renewal, **self-fences**: :meth:`NodeRegistry.check` raises from then on,
  before the server can expire the key and let another node take its objects.
- An object is leased by ``create`` of ``duro_owners.<key>``, or by ``update(last=revision)`` over a
  released key or one whose owner's registration is gone. The revision the server returns is the
  **fencing token** (the lease's ``epoch``): the journal puts it in every record it appends.
- A graceful :meth:`Leases.release` deletes the key at the lease's revision: the next claim wins at
  once, with no TTL to wait out.
- Every object claimed is also recorded, once, in ``duro_objects.<key>`` (its namespace and ID;
  never deleted): a released lease forgets which object it was, and ``duro objects list`` against
  a cluster lists every object from there (:meth:`Leases.directory`).

The lease is the fast path, not the guarantee: a stale owner's appends are refused by the stream
itself (:mod:`.journal`), whatever the clocks say. Never: treat a lease as valid after
:meth:`NodeRegistry.check` has failed, or renew anything but with a compare-and-swap.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.js.api import KeyValueConfig, StorageType

from ..errors import DuroError, InvalidInputError

__all__ = ["LeaseOptions", "Lease", "NodeRegistry", "Leases", "LeaseHeldError", "SelfFencedError",
           "NodeNameTakenError", "ClusterUnavailableError", "object_key", "NODES_BUCKET", "OWNERS_BUCKET"]

log = logging.getLogger("duro.cluster")

NODES_BUCKET = "duro_nodes"
OWNERS_BUCKET = "duro_owners"
OBJECTS_BUCKET = "duro_objects"  # key -> {"ns", "id"}: every object ever claimed (module doc)
_WRONG_LAST = (10071, 10164)
NO_PEERS_YET = 10005  # "no suitable peers for placement": too few servers known (yet) for the replication


class LeaseHeldError(DuroError):
    """The object is leased by another live node (``owner``). Nothing changed; route to the owner,
    or retry once it is gone."""

    retryable = True

    def __init__(self, key: str, owner: str) -> None:
        self.key = key
        self.owner = owner
        super().__init__(f"object {key} is owned by node {owner!r}")


class SelfFencedError(DuroError):
    """This node could not renew its registration in time (or lost it): it must not write. Raised
    by :meth:`NodeRegistry.check` and everything that calls it; the node's objects move to other
    nodes. Retryable for a client: another node will serve the object."""

    retryable = True


class ClusterUnavailableError(DuroError):
    """NATS did not answer in time (no connection, no leader elected yet, a timeout). The request
    may or may not have landed; retrying settles it."""

    retryable = True


# NATS did not answer in time (no leader yet, an election, a reconnect): retry; a request that timed
# out may still have landed, which each caller resolves (a Msg-Id, a compare-and-swap, "already ours").
TRANSIENT_ERRORS = (nats.errors.NoRespondersError, nats.errors.TimeoutError, asyncio.TimeoutError,
                    nats.js.errors.ServiceUnavailableError, nats.js.errors.NoStreamResponseError,
                    nats.errors.ConnectionReconnectingError)


class NodeNameTakenError(DuroError):
    """Another live node is registered under this name. Raised at start; nothing runs."""


def object_key(name: str) -> str:
    """A subject- and key-safe name for an object (base32 of its SHA-256, 26 characters): the
    object's real name travels in values, never in subjects."""
    digest = hashlib.sha256(name.encode()).digest()
    return base64.b32encode(digest).decode().rstrip("=").lower()[:26]


def _check_key(what: str, key: str) -> None:
    if not key or len(key) > 200 or not all(c.isalnum() or c in "-_" for c in key):
        raise InvalidInputError(f"{what} {key!r} is not valid: use 1-200 letters, digits, '-' or '_' "
                                "(object_key() makes one from any name)")


@dataclass(frozen=True)
class LeaseOptions:
    """``ttl``: seconds the server keeps a node's registration after its last renewal (whole
    seconds, at least 1); ``renew_every``: seconds between renewals; ``margin``: the node stops
    writing this long before its registration could expire; ``replicas``: of the buckets (3 on a
    cluster); ``timeout``: seconds per request."""

    ttl: float = 3.0
    renew_every: float = 1.0
    margin: float = 0.5
    replicas: int = 3
    timeout: float = 2.0

    def __post_init__(self) -> None:
        if self.ttl < 1 or int(self.ttl) != self.ttl:
            raise InvalidInputError(f"lease ttl is {self.ttl!r}; it must be a whole number of seconds >= 1")
        if not 0 < self.renew_every < self.ttl - self.margin:
            raise InvalidInputError(f"renew_every ({self.renew_every}) must be below ttl - margin "
                                    f"({self.ttl - self.margin})")


async def _bucket(js: Any, name: str, options: LeaseOptions) -> Any:
    """The bucket ``name``, created when missing (file storage, history 1, per-key TTL allowed)."""
    deadline = time.monotonic() + 15
    kv = None
    while True:  # a new cluster may not have elected its meta leader, nor the bucket its leader, yet
        try:
            if kv is None:
                try:
                    kv = await js.key_value(name)
                except nats.js.errors.BucketNotFoundError:
                    pass
            if kv is None:
                try:
                    kv = await js.create_key_value(KeyValueConfig(bucket=name, history=1, replicas=options.replicas,
                                                                  storage=StorageType.FILE))
                except nats.js.errors.APIError as e:
                    if isinstance(e, TRANSIENT_ERRORS):
                        raise
                    if e.err_code == NO_PEERS_YET and time.monotonic() < deadline:
                        await asyncio.sleep(0.2)  # a new cluster's servers still meeting: not yet every peer known
                        continue
                    raise DuroError(f"cannot create the key-value bucket {name!r} ({options.replicas} replicas): "
                                    f"{e.description or e}") from e
            await _leader_get(js, name, "duro-probe")  # answered by the bucket's leader: it has one
            return kv
        except TRANSIENT_ERRORS:
            if time.monotonic() > deadline:
                raise ClusterUnavailableError(f"cannot open the key-value bucket {name!r}: JetStream did not "
                                              "answer within 15 s; is JetStream enabled on the servers?") from None
            await asyncio.sleep(0.1)


async def _read_bucket(kv: Any, timeout: float = 5.0, tries: int = 3) -> dict[str, bytes]:
    """Every key of a bucket with its value (deleted keys left out). Read until the entry the
    server delivered with nothing pending after it, not until the watcher's first "no more"
    marker: nats-py puts that marker first when the server had delivered every entry before the
    consumer's info came back but none had been handled yet, and a read that stopped there saw an
    empty bucket (every node looked dead to a listing; tests/cluster/test_leases.py). A read that
    saw fewer keys than the bucket held when it began (history 1: one message per key, deleted or
    not) lost one to a concurrent update, and is read again (at most ``tries`` times)."""
    out: dict[str, bytes] = {}
    for _ in range(tries):
        held = (await kv.status()).values
        if held == 0:
            return {}
        out, seen = await _read_bucket_once(kv, timeout)
        if seen >= held:
            break
    return out


async def _read_bucket_once(kv: Any, timeout: float) -> tuple[dict[str, bytes], int]:
    """(values, the number of keys seen, deleted ones counted) of one read (_read_bucket)."""
    watcher = await kv.watchall()
    out: dict[str, bytes] = {}
    seen: set[str] = set()
    marked = False  # the watcher said "no more": a quiet spell ends the read
    try:
        while True:
            try:
                entry = await watcher.updates(timeout=timeout)
            except nats.errors.TimeoutError:
                if marked:
                    return out, len(seen)  # what the bucket held is gone (expired or purged) since
                raise
            if entry is None:
                marked = True
                continue
            seen.add(entry.key)
            if entry.operation is None and entry.value is not None:
                out[entry.key] = entry.value
            else:
                out.pop(entry.key, None)
            if entry.delta == 0:
                return out, len(seen)  # the last entry stored when it was sent
    finally:
        with contextlib.suppress(Exception):
            await watcher.stop()


async def _leader_get(js: Any, bucket: str, key: str) -> tuple[int, bytes | None]:
    """(revision, value) of ``key`` read from the bucket's stream leader; value None for a deleted
    key, (0, None) for one never written. Never a direct get: a replica may lag, and a stale "no
    registration" would let a live node's object be taken."""
    try:
        msg = await js.get_msg(f"KV_{bucket}", subject=f"$KV.{bucket}.{key}", direct=False)
    except nats.js.errors.NotFoundError:
        return 0, None
    if (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
        return msg.seq, None
    return msg.seq, msg.data or b""


class NodeRegistry:
    """This node's registration (module doc). ``await register()``, then it renews itself until
    ``await close()``."""

    def __init__(self, js: Any, node: str, options: LeaseOptions = LeaseOptions()) -> None:
        _check_key("node name", node)
        self.js = js
        self.node = node
        self.options = options
        self.incarnation = uuid.uuid4().hex  # which run of this node: a restarted node is another owner
        self.epoch = 0  # the revision of the registration's create
        self._kv: Any = None
        self._rev = 0
        self._valid_until = 0.0
        self._lost: str | None = None  # why the registration is gone for good
        self._lost_at = float("inf")
        self._task: asyncio.Task[None] | None = None
        self.renewals = 0

    @property
    def value(self) -> bytes:
        return json.dumps({"node": self.node, "incarnation": self.incarnation}).encode()

    async def register(self) -> int:
        """Create the registration; NodeNameTakenError if another live node has this name."""
        self._kv = await _bucket(self.js, NODES_BUCKET, self.options)
        deadline = time.monotonic() + 15
        tried = False  # an earlier create timed out: it may have landed, and "wrong last" may be ours
        while True:
            sent = time.monotonic()
            try:
                rev = await self._kv.create(self.node, self.value, msg_ttl=self.options.ttl)
                break
            except nats.js.errors.KeyWrongLastSequenceError:
                if tried:
                    rev, value = await _leader_get(self.js, NODES_BUCKET, self.node)
                    if value is not None and json.loads(value).get("incarnation") == self.incarnation:
                        break  # the timed-out create landed: it is this run's registration
                raise NodeNameTakenError(f"a node named {self.node!r} is already registered in this cluster; "
                                         "choose another --node name, or wait for it to stop") from None
            except TRANSIENT_ERRORS:
                # A new bucket's stream may still be electing its leader (or re-electing one).
                if time.monotonic() > deadline:
                    raise ClusterUnavailableError(f"cannot register node {self.node!r}: JetStream did not "
                                                  "answer within 15 s") from None
                tried = True
                await asyncio.sleep(0.1)
        self.epoch = self._rev = rev
        self._valid_until = sent + self.options.ttl - self.options.margin
        self._lost = None
        self._task = asyncio.get_running_loop().create_task(self._renew_forever(), name=f"duro-renew-{self.node}")
        return rev

    async def renew(self) -> bool:
        """One renewal (compare-and-swap on the registration's revision). False if it failed."""
        if self._lost is not None:
            return False
        sent = time.monotonic()
        headers = {"Nats-Expected-Last-Subject-Sequence": str(self._rev), "Nats-TTL": f"{int(self.options.ttl)}s"}
        try:
            # A renewal that takes longer than the interval is as good as lost: try again instead.
            ack = await self.js.publish(f"$KV.{NODES_BUCKET}.{self.node}", self.value, headers=headers,
                                        timeout=min(self.options.timeout, self.options.renew_every))
        except nats.js.errors.APIError as e:
            if e.err_code in _WRONG_LAST:
                await self._resolve_wrong_last()
            return False
        except (nats.errors.Error, asyncio.TimeoutError, OSError):
            return False
        self._rev = ack.seq
        self._valid_until = max(self._valid_until, sent + self.options.ttl - self.options.margin)
        self.renewals += 1
        return True

    async def _resolve_wrong_last(self) -> None:
        """A renewal was refused as "wrong last sequence". An earlier renewal whose answer was lost
        (a timeout) may have landed: if the registration still carries this run's incarnation it
        is that one, and its revision is adopted (the validity is not extended: the next renewal
        does that). Otherwise the registration expired or another node has the name: lost."""
        try:
            rev, value = await _leader_get(self.js, NODES_BUCKET, self.node)
        except (nats.errors.Error, asyncio.TimeoutError, OSError):
            return  # unknown: the next renewal tries again
        try:
            ours = value is not None and json.loads(value).get("incarnation") == self.incarnation
        except ValueError:
            ours = False
        if ours:
            self._rev = rev
        else:
            self._lose("its registration changed under it (it expired, or another node took the name)")

    def _lose(self, why: str) -> None:
        if self._lost is None:
            self._lost = why
            self._lost_at = time.monotonic()
            log.error("node %s self-fenced: %s; it stops writing, its objects move to other nodes", self.node, why)

    async def _renew_forever(self) -> None:
        while self._lost is None:
            await asyncio.sleep(self.options.renew_every)
            if not await self.renew() and not self.writable():
                self._lose(f"no renewal succeeded within {self.options.ttl - self.options.margin:.1f} s")

    @property
    def valid_until(self) -> float:
        """The monotonic time this node stops writing unless a renewal succeeds first (it has
        stopped already if :meth:`writable` is False)."""
        return self._valid_until if self._lost is None else min(self._valid_until, self._lost_at)

    def writable(self) -> bool:
        """True while this node may write: registered, and within its TTL less the margin."""
        return self._lost is None and self._rev > 0 and time.monotonic() < self._valid_until

    def check(self) -> None:
        """Raise SelfFencedError unless :meth:`writable`."""
        if not self.writable():
            why = self._lost or ("not registered" if not self._rev else
                                 f"no renewal within {self.options.ttl - self.options.margin:.1f} s")
            raise SelfFencedError(f"node {self.node} is self-fenced ({why}): it does not accept writes; retry "
                                  "and another node will serve the object")

    async def is_live(self, node: str, incarnation: str) -> bool:
        """Whether ``node``'s run ``incarnation`` is still registered."""
        if not node:
            return False
        _, value = await _leader_get(self.js, NODES_BUCKET, node)
        if value is None:
            return False
        try:
            return json.loads(value).get("incarnation") == incarnation
        except ValueError:
            return False

    async def close(self, *, deregister: bool = True) -> None:
        """Stop renewing; with ``deregister`` delete the registration (a graceful stop)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if deregister and self._lost is None and self._rev:
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError):
                await self._kv.delete(self.node, last=self._rev)
        if self._lost is None:
            self._lost, self._lost_at = "closed", time.monotonic()


@dataclass(frozen=True)
class Lease:
    """The lease of one object: ``epoch`` is the fencing token (the revision of the claim)."""

    key: str
    node: str
    epoch: int


class Leases:
    """Object leases of the node ``registry`` registered (module doc)."""

    def __init__(self, registry: NodeRegistry) -> None:
        self.registry = registry
        self._kv: Any = None
        self._objects: Any = None  # the bucket OBJECTS_BUCKET
        self._recorded: set[str] = set()  # keys this process knows are in it
        self._recording: set[asyncio.Task[None]] = set()

    async def open(self) -> "Leases":
        self._kv = await _bucket(self.registry.js, OWNERS_BUCKET, self.registry.options)
        self._objects = await _bucket(self.registry.js, OBJECTS_BUCKET, self.registry.options)
        return self

    async def claim(self, key: str, about: dict[str, str] | None = None) -> Lease:
        """Lease object ``key`` for this node. LeaseHeldError if a live node holds it or won the
        race; SelfFencedError if this node may not write; ClusterUnavailableError if NATS did not
        answer (the claim may or may not have landed: claiming again settles it). ``about`` is
        stored in the lease's value beside the owner (which object it is: a survivor reads it to
        adopt the objects of a dead node)."""
        _check_key("object key", key)
        # Retrying is safe: a claim that landed unanswered is found to be ours ("already ours").
        deadline = time.monotonic() + 3 * self.registry.options.timeout
        while True:
            try:
                lease = await self._claim(key, about)
                # The node may have stopped being writable while the claim was on its way: such a
                # lease is not used (the object moves on once the registration expires).
                self.registry.check()
                self._record(key, about)
                return lease
            except TRANSIENT_ERRORS as e:
                if time.monotonic() > deadline:
                    raise ClusterUnavailableError(f"claiming object {key}: NATS did not answer "
                                                  f"({type(e).__name__})") from e
            await asyncio.sleep(0.05)

    async def _claim(self, key: str, about: dict[str, str] | None = None) -> Lease:
        reg = self.registry
        reg.check()
        mine = reg.value if not about else json.dumps({**json.loads(reg.value), **about}).encode()
        try:
            return Lease(key, reg.node, await self._kv.create(key, mine))
        except nats.js.errors.KeyWrongLastSequenceError:
            pass
        last, value = await _leader_get(reg.js, OWNERS_BUCKET, key)
        owner: dict[str, str] = {}
        if value is not None:  # else released meanwhile: take it over its tombstone
            try:
                owner = json.loads(value)
            except ValueError:
                owner = {}
            if owner.get("node") == reg.node and owner.get("incarnation") == reg.incarnation:
                return Lease(key, reg.node, last)  # already ours
            if await reg.is_live(owner.get("node", ""), owner.get("incarnation", "")):
                raise LeaseHeldError(key, owner.get("node", "?"))
        reg.check()
        try:
            return Lease(key, reg.node, await self._kv.update(key, mine, last=last))
        except nats.js.errors.KeyWrongLastSequenceError:
            raise LeaseHeldError(key, "another node (it claimed the object first)") from None

    def _record(self, key: str, about: dict[str, str] | None) -> None:
        """Record the object in OBJECTS_BUCKET if this process has not yet: in the background (a
        claim never waits for it); one that fails is tried again at the object's next claim."""
        if key in self._recorded or self._objects is None or not about or not about.get("ns") \
                or not about.get("id"):
            return
        if len(self._recorded) > 100_000:
            self._recorded.clear()  # bounded: a key recorded already costs one refused create
        self._recorded.add(key)
        value = json.dumps({"ns": about["ns"], "id": about["id"]}).encode()
        task = asyncio.get_running_loop().create_task(self._record_now(key, value), name="duro-record-object")
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def _record_now(self, key: str, value: bytes) -> None:
        try:
            await self._objects.create(key, value)
        except nats.js.errors.KeyWrongLastSequenceError:
            pass  # recorded before
        except Exception as e:  # noqa: BLE001 - only the listing misses it; the next claim retries
            self._recorded.discard(key)
            log.info("object %s not recorded in %s yet: %s", key, OBJECTS_BUCKET, e)

    async def directory(self) -> list[dict[str, str]]:
        """Every object of the cluster as {"key", "ns", "id", "node"}: those recorded in
        OBJECTS_BUCKET and those whose lease says which object it is, with ``node`` the live node
        that holds its lease now ("" for none: released, handed over, or its owner is gone).
        Reads three buckets whole (one ordered consumer each), not from their leaders: a listing."""
        js, opts = self.registry.js, self.registry.options
        objects = await _read_bucket(self._objects)
        owners = await _read_bucket(self._kv)
        nodes = await _read_bucket(await _bucket(js, NODES_BUCKET, opts))
        live: dict[str, str] = {}
        for name, raw in nodes.items():
            with contextlib.suppress(ValueError, AttributeError):
                live[name] = json.loads(raw).get("incarnation", "")
        out: dict[str, dict[str, str]] = {}
        for key, raw in [*objects.items(), *owners.items()]:
            try:
                about = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(about, dict) or not about.get("ns") or not about.get("id"):
                continue
            out.setdefault(key, {"key": key, "ns": about["ns"], "id": about["id"], "node": ""})
        for key, raw in owners.items():
            if key not in out:
                continue
            with contextlib.suppress(ValueError, AttributeError):
                held = json.loads(raw)
                node = held.get("node", "")
                if node and live.get(node) == held.get("incarnation", ""):
                    out[key]["node"] = node
        return list(out.values())

    async def release(self, lease: Lease) -> bool:
        """Hand the object over at once (a graceful stop or eviction). False if the lease was no
        longer this node's (someone took it over: nothing to release); ClusterUnavailableError if
        NATS did not answer (the lease then ends with this node's registration)."""
        try:
            await self._kv.delete(lease.key, last=lease.epoch)
        except TRANSIENT_ERRORS as e:
            raise ClusterUnavailableError(f"releasing object {lease.key}: NATS did not answer "
                                          f"({type(e).__name__})") from e
        except nats.js.errors.APIError as e:
            if e.err_code in _WRONG_LAST:
                return False
            raise
        return True

    async def hand_over(self, lease: Lease, about: dict[str, str]) -> bool:
        """Release the object but leave ``about`` in its lease (with no owner) by compare-and-swap,
        so that a survivor adopts it (it has an alarm to fire). False if the lease was no longer
        this node's."""
        value = json.dumps({"node": "", "incarnation": "", **about}).encode()
        try:
            await self._kv.update(lease.key, value, last=lease.epoch)
        except TRANSIENT_ERRORS as e:
            raise ClusterUnavailableError(f"handing object {lease.key} over: NATS did not answer "
                                          f"({type(e).__name__})") from e
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        return True

    async def orphans(self) -> list[tuple[str, dict[str, str]]]:
        """The leases whose owner is gone (its registration expired, or it handed the object over
        with something left to do), as (key, value): what a survivor may adopt. Reads every lease."""
        keys = await _read_bucket(self._kv)
        out: list[tuple[str, dict[str, str]]] = []
        live: dict[tuple[str, str], bool] = {}
        for key in keys:
            _, value = await _leader_get(self.registry.js, OWNERS_BUCKET, key)
            if value is None:
                continue
            try:
                held = json.loads(value)
            except ValueError:
                continue
            if not held.get("ns") or not held.get("id"):
                continue  # a lease that does not say which object it is
            who = (held.get("node", ""), held.get("incarnation", ""))
            if who not in live:
                live[who] = await self.registry.is_live(*who)
            if not live[who]:
                out.append((key, held))
        return out

    async def live_nodes(self) -> list[str]:
        """The names of the nodes registered now."""
        return sorted(await _read_bucket(await _bucket(self.registry.js, NODES_BUCKET, self.registry.options)))

    async def owner(self, key: str) -> tuple[str, int] | None:
        """(node, epoch) of the object's current lease record, or None when unowned."""
        _check_key("object key", key)
        rev, value = await _leader_get(self.registry.js, OWNERS_BUCKET, key)
        if value is None:
            return None
        try:
            return json.loads(value).get("node", "?"), rev
        except ValueError:
            return "?", rev
