"""Calls between cluster nodes: the worker router's interface (``runtime/router.py``) over NATS.

``owner(hex_id)`` is this node's name when it owns the object, else a token naming the object
(whoever owns it); ``call()`` sends the call as a NATS request on the object's subject
``duro.o.<key>``, where only its owner listens, and returns the answer's bytes; ``handle()``
installs what runs a call of a kind here (``api/forwarding.py`` installs fetch and rpc, unchanged).
A request and its answer are msgpack arrays: ``[op, namespace, hex_id, name, label, payload,
caller_node, caller_incarnation]`` and ``[ok, payload]`` (``ok`` false: ``payload`` describes the
exception).

"No responders" means nobody owns the object: this node claims it (``ClusterNode.acquire``) and
runs the call itself. A claim that loses (a live node holds the lease but is not listening yet,
say while it rebuilds) is retried until the call's deadline. A request that times out checks the
owner: if its registration is gone (a hung or dead node whose connection NATS has not dropped yet)
this node claims the object, else the caller gets a retryable error.

WebSockets across nodes (``http/bridge.py`` does the bridging; this module gives it links). A link
is this node's path to one run (``incarnation``) of another node: ``post`` publishes a one-way
message on that node's subject ``duro.n.<node>`` as ``[to_incarnation, from_node,
from_incarnation, op, payload]``, in order (one sender per link, and NATS keeps the order of one
connection's messages on one subject; a message larger than a NATS message goes as parts). Every
node listens on its own subject and hands a message to
the one-way handler of ``op`` with the link of its sender. A request carries its caller's node and
incarnation, so the owner that accepts a WebSocket bridges it over the link to the caller; the 101
names the bridge as ``<node> <incarnation> <bridge>`` (``bridge_token``), so the caller knows the
link the frames come back on. A link closes (its ``on_close`` callbacks run: bridged connections
here close 1012, sockets owned here for the other node get ``websocket_close`` 1006) when the other
node says goodbye at a graceful stop, or when a check (every ``DURO_CLUSTER_LINK_CHECK`` s, 1 by
default) finds that run no longer registered: a node that died is found within its lease TTL plus
one check, and only then can its objects move. A message for an earlier run of this node, or from
a run whose link closed, is dropped. When this node registers again under a new run (it had
self-fenced) its links of the earlier run close at once; an object dropped while this node lives
closes its hibernatable sockets, local or bridged, with 1012: their clients reconnect and reach its
new owner.

Never: run a call for an object this node does not own, or answer one while this node may not write.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

import msgpack
import nats.errors

from ..errors import DuroError
from ..runtime.router import BYE, Handler, Link, OneWay, PeerGone, TakenHere, _Failed
from ..runtime.sockets import CLOSED
from .leases import OBJECTS_BUCKET, OWNERS_BUCKET, TRANSIENT_ERRORS, ClusterUnavailableError, LeaseHeldError, \
    SelfFencedError, _leader_get, object_key
from .changes import log_outside_change
from .node import ClusterNode

__all__ = ["ClusterRouter", "ClusterSlot", "REMOTE"]

log = logging.getLogger("duro.cluster")

REMOTE = "@"  # owner(hex_id) of an object this node does not own: "@<hex_id>"
NODE_SUBJECT = "duro.n"  # duro.n.<node>: one-way messages to a node (bridged WebSocket frames)
_TEXT_MOVED = "The Durable Object moved to another node; reconnect."
PART = "__part__"  # one-way: a part of the next message's payload (a message larger than NATS carries)
_ENVELOPE = 512  # room kept in a NATS message for the envelope around a part


@dataclass(frozen=True)
class ClusterSlot:
    """This node's place, as the worker router's users see it: ``index`` is the node's name;
    ``count`` 1 (the per-machine fan-outs of metrics and tails stay on this node)."""

    index: str
    count: int = 1


class _NoLink:
    """A call run here for this node itself has no other node to post one-way messages to."""

    closed = False

    def post(self, op: str, payload: bytes) -> bool:
        return False

    def on_close(self, callback: Callable[[], None]) -> None:
        pass


class NodeLink(Link):
    """This node's path to one run of another node (module doc): the worker link's interface, with
    messages published on that node's subject by one sender, in order."""

    crosses_nodes = True
    lost_text = "The cluster node that holds this Durable Object stopped or gave it up; reconnect."

    def __init__(self, router: "ClusterRouter", node: str, incarnation: str, local: str) -> None:
        super().__init__()
        self.moved = False  # closed because this node's run ended: its objects are elsewhere now
        self.router = router
        self.node = node
        self.incarnation = incarnation
        self.local = local  # this node's incarnation when the link was made
        self._queue: collections.deque[bytes] = collections.deque()
        self.sending: asyncio.Task[None] | None = None
        self.parts: list[bytes] = []  # the parts received so far of a large message from that run

    def post(self, op: str, payload: bytes) -> bool:
        nc = self.router.node.nc
        if self.closed or nc is None or nc.is_closed:
            return False
        # A message larger than one NATS message (a WebSocket message may be up to 32 MiB) goes as
        # consecutive parts; one sender and one subject keep them together and in order.
        room = max(1024, (getattr(nc, "max_payload", 0) or 1 << 20) - _ENVELOPE)
        head = [self.incarnation, self.router.node.node, self.local]
        while len(payload) > room:
            self._queue.append(msgpack.packb([*head, PART, payload[:room]], use_bin_type=True))
            payload = payload[room:]
        self._queue.append(msgpack.packb([*head, op, payload], use_bin_type=True))
        if self.sending is None:
            self.sending = asyncio.get_running_loop().create_task(self._send(), name="duro-cluster-link")
        return True

    async def _send(self) -> None:
        subject = f"{NODE_SUBJECT}.{self.node}"
        nc = self.router.node.nc
        try:
            while self._queue:
                data = self._queue.popleft()
                try:
                    await nc.publish(subject, data)
                except Exception as e:  # noqa: BLE001 - too large, or the connection closed: this one is lost
                    log.warning("a message to node %s was not sent: %s", self.node, e)
        finally:
            self.sending = None


class ClusterRouter:
    """The calls between this node and the others (module doc)."""

    # Between machines: /metrics and tails stay per node (not yet); WebSockets are bridged (module doc).
    crosses_nodes = True

    def __init__(self, node: ClusterNode, *, call_timeout: float | None = None) -> None:
        self.node = node
        self.slot = ClusterSlot(node.node)
        self.call_timeout = call_timeout or float(os.environ.get("DURO_CLUSTER_CALL_TIMEOUT", "10"))
        self.describe: Callable[[BaseException], Any] = lambda e: {"message": str(e)}
        self._handlers: dict[str, Handler] = {}
        self._serving: set[asyncio.Task[Any]] = set()
        self.bridge_accept = None
        self.bridge_proxy = None
        self.forwarded = 0  # calls sent to another node
        self.served = 0  # calls run here for another node
        self.claims = 0  # objects this router claimed after "no responders"
        self._one_way: dict[str, OneWay] = {}
        self._links: dict[tuple[str, str], NodeLink] = {}  # (node, incarnation) -> the link to that run
        self._gone: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()  # closed links
        self._local = ""  # this node's incarnation the links were made under
        self.link_check = float(os.environ.get("DURO_CLUSTER_LINK_CHECK", "1"))
        self._sub: Any = None
        self._checker: asyncio.Task[None] | None = None
        node.on_request = self._on_request
        node.on_drop = self._dropped

    # ------------------------------------------------------------------ ownership
    def owner(self, hex_id: str) -> str:
        return self.slot.index if self.node.owns(object_key(hex_id)) else REMOTE + hex_id

    def is_local(self, hex_id: str) -> bool:
        return self.node.owns(object_key(hex_id))

    async def take_for_change(self, namespace: str, hex_id: str) -> str | None:
        """Before an admin change of an object (cluster/changes.py): make this node its owner.
        None once it is; the name of the live node that owns it instead (the change runs there)."""
        try:
            await self.node.acquire(namespace, hex_id)  # a no-op when this node owns it
        except LeaseHeldError as e:
            return e.owner
        return None

    async def log_change(self, namespace: str, hex_id: str) -> None:
        """After an admin change of an owned object: append it to the object's log (cluster/changes.py)."""
        await log_outside_change(self.node, namespace, hex_id)

    def remote(self, hex_id: str) -> str:
        """The owner :meth:`call` takes for object ``hex_id`` wherever it lives (its owner node)."""
        return REMOTE + hex_id

    def remote_id(self, owner: str) -> str:
        """The object ID of an owner :meth:`owner` or :meth:`remote` gave."""
        return owner[len(REMOTE):] if owner.startswith(REMOTE) else owner

    async def stored(self, hex_id: str) -> bool:
        """Whether the cluster knows object ``hex_id``: a lease, an entry in the object directory,
        or records in the journal. True when NATS cannot tell (a call then finds out)."""
        key = object_key(hex_id)
        node = self.node
        try:
            if await node.leases.owner(key) is not None:  # type: ignore[union-attr]
                return True
            if (await _leader_get(node.js, OBJECTS_BUCKET, key))[1] is not None:
                return True
            return bool((await node.journal.tail(key))[0])  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - NATS busy: let the call find out
            return True

    def metrics(self) -> list[Any]:
        """This node's ``duro_cluster_*`` metrics, for ``/metrics`` (``cluster/metrics.py``)."""
        from .metrics import cluster_metrics
        return cluster_metrics(self)

    # ------------------------------------------------------------------ set-up
    def handle(self, op: str, fn: Handler) -> None:
        self._handlers[op] = fn

    def handle_one_way(self, op: str, fn: OneWay) -> None:
        self._one_way[op] = fn

    async def start(self) -> None:
        # The node connected and registered before the server started: listen for other nodes'
        # one-way messages, and watch the runs the links lead to.
        self._current()
        self._sub = await self.node.nc.subscribe(f"{NODE_SUBJECT}.{self.node.node}", cb=self._on_message)
        self._checker = asyncio.get_running_loop().create_task(self._check_links(), name="duro-cluster-links")

    async def close(self) -> None:
        for t in list(self._serving):
            t.cancel()
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker
        # Goodbye to every node a link leads to: their connections bridged to sockets here close
        # with 1012 (the objects move), their sockets bridged from connections here end (1006).
        for link in list(self._links.values()):
            link.post(BYE, b"")
        sending = [link.sending for link in self._links.values() if link.sending is not None]
        if sending:
            await asyncio.wait(sending, timeout=2.0)
        await self.node.close()

    def link_to(self, index: Any) -> Any:
        return _NoLink()

    def _dropped(self, namespace: str, hex_id: str) -> None:
        """An object moved away from this node while it lives (fenced, self-fenced, a failed
        append): its hibernatable sockets, local or bridged, close 1012 so that their clients
        reconnect and reach its new owner (its standard sockets closed with its instance)."""
        ent = self.node.runtime.hibernation.get(namespace, hex_id)
        for channel in ent.sockets() if ent is not None else ():
            if channel.ready_state != CLOSED and not channel.close_sent:
                channel.close(1012, _TEXT_MOVED, None)

    # ------------------------------------------------------------------ links to other nodes
    def _current(self) -> str:
        """This node's run now. Once it registered again (it had self-fenced: its objects went to
        other nodes, which close their links to its earlier run) every link of the earlier run
        closes here too: connections bridged to other nodes close 1012, and sockets of objects this
        node dropped are let go."""
        reg = self.node.registry
        local = reg.incarnation if reg is not None else ""
        if local != self._local:
            self._local = local
            for link in list(self._links.values()):
                link.moved = True
                self._close_link(link, gone=False)  # that other run lives on: a new link may lead to it
        return local

    def bridge_token(self, bridge: int) -> str:
        return f"{self.node.node} {self._current()} {bridge}"

    def bridge_link(self, owner: Any, token: str) -> tuple[Link, int]:
        node, incarnation, bridge = token.split(" ")
        link = self._link(node, incarnation)
        if link is None:  # the owner's run is gone already: a closed link (the socket closes 1012)
            link = NodeLink(self, node, incarnation, self._current())
            link._closed()
        return link, int(bridge)

    def _link(self, node: str, incarnation: str) -> NodeLink | None:
        local = self._current()
        key = (node, incarnation)
        link = self._links.get(key)
        if link is None and key not in self._gone:
            link = self._links[key] = NodeLink(self, node, incarnation, local)
        return link

    def _close_link(self, link: NodeLink, gone: bool = True) -> None:
        key = (link.node, link.incarnation)
        if self._links.get(key) is link:
            del self._links[key]
        if gone:
            self._gone[key] = None
            while len(self._gone) > 10_000:
                self._gone.popitem(last=False)
        link._closed()

    async def _on_message(self, msg: Any) -> None:
        # Nothing awaited here: the subscription hands over its messages one by one, in order.
        try:
            to, node, incarnation, op, payload = msgpack.unpackb(msg.data, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException):
            log.error("a malformed message on %s was dropped", msg.subject)
            return
        if to != self._current():
            return  # for an earlier run of this node
        link = self._link(node, incarnation)
        if link is None:
            return  # its link closed (that run is gone): nothing of it is kept
        if op == PART:
            link.parts.append(payload)
            return
        if link.parts:
            payload, link.parts = b"".join([*link.parts, payload]), []
        if op == BYE:
            self._close_link(link)
            return
        one_way = self._one_way.get(op)
        if one_way is None:
            log.error("a message of unknown kind %r from node %s was dropped", op, node)
            return
        try:
            one_way("", "", None, "", payload, link)
        except Exception:
            log.exception("a %s message from node %s failed", op, node)

    async def _check_links(self) -> None:
        """Close the links to runs of other nodes that are no longer registered (module doc), and
        every link once this node registers again under a new run (it had self-fenced: its objects
        went to other nodes)."""
        while True:
            await asyncio.sleep(self.link_check)
            self._current()
            reg = self.node.registry
            if reg is None:
                continue
            for link in [link for link in self._links.values() if link._on_close]:  # those a bridge uses
                try:
                    live = await reg.is_live(link.node, link.incarnation)
                except TRANSIENT_ERRORS:
                    continue  # NATS is busy: the next check decides
                except Exception as e:  # noqa: BLE001 - never let the watch die
                    log.warning("checking node %s failed: %s", link.node, e)
                    continue
                if not live:
                    log.info("node %s (run %s) is gone: its bridged WebSockets end", link.node, link.incarnation[:8])
                    self._close_link(link)

    # ------------------------------------------------------------------ calls out
    async def call(self, owner: Any, op: str, namespace: str, hex_id: str, name: str | None, label: str,
                   payload: bytes, *, sent: Callable[[], None] | None = None) -> bytes:
        """Run ``op`` on the object's owner (module doc) and return its answer; the callee's
        exception comes back as ``_Failed`` (its description), or a retryable error."""
        if isinstance(owner, str) and owner.startswith(REMOTE) and not hex_id:
            hex_id = owner[len(REMOTE):]
        key = object_key(hex_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.call_timeout
        data = msgpack.packb([op, namespace, hex_id, name, label, payload, self.node.node, self._current()],
                             use_bin_type=True)
        delay = 0.01
        try:
            while True:
                if self.node.owns(key):
                    if op in ("fetch", "rpc"):
                        raise TakenHere()
                    return await self._run_here(op, namespace, hex_id, name, label, payload)
                left = deadline - loop.time()
                if left <= 0:
                    raise PeerGone(f"Network connection lost. No node answered for object {hex_id} within "
                                   f"{self.call_timeout:.0f} s; retry")
                try:
                    self.forwarded += 1
                    fut = loop.create_task(self.node.nc.request(self.node.subject(key), data, timeout=left))
                    if sent is not None:
                        sent()
                        sent = None
                    reply = await fut
                except nats.errors.NoRespondersError:
                    if not namespace:
                        raise DuroError(f"object {hex_id} is not active on any node; this operation cannot "
                                        "start it in cluster mode (run a request to it first)") from None
                    try:
                        await self.node.acquire(namespace, hex_id)
                        self.claims += 1
                        continue
                    except LeaseHeldError:
                        pass  # a live owner is about to listen (it is rebuilding): ask again shortly
                    except (SelfFencedError, ClusterUnavailableError) as e:
                        if loop.time() > deadline:
                            raise e from None
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.2)
                    continue
                except (nats.errors.TimeoutError, asyncio.TimeoutError):
                    if namespace and await self._owner_gone(key):
                        # A hung owner whose connection NATS keeps: its registration expired, so the
                        # object is claimed here (it answers nothing once it resumes: self-fenced).
                        try:
                            await self.node.acquire(namespace, hex_id)
                            self.claims += 1
                            continue
                        except (LeaseHeldError, SelfFencedError, ClusterUnavailableError):
                            pass
                    raise PeerGone(f"Network connection lost. The node that owns object {hex_id} did not answer "
                                   f"within {self.call_timeout:.0f} s; the call may or may not have run: retry only "
                                   "if it is safe to") from None
                except (nats.errors.ConnectionReconnectingError, nats.errors.ConnectionClosedError) as e:
                    raise ClusterUnavailableError(f"this node lost its NATS connection ({type(e).__name__}); "
                                                  "retry") from None
                ok, answer = msgpack.unpackb(reply.data, raw=False)
                if ok:
                    return answer  # type: ignore[no-any-return]
                raise _Failed(answer)
        finally:
            if sent is not None:
                sent()

    async def _owner_gone(self, key: str) -> bool:
        """Whether the object's lease holder is no longer registered (the object can be claimed)."""
        try:
            _, raw = await _leader_get(self.node.js, OWNERS_BUCKET, key)
            if raw is None:
                return True
            held = json.loads(raw)
            return not await self.node.registry.is_live(held.get("node", ""),  # type: ignore[union-attr]
                                                        held.get("incarnation", ""))
        except TRANSIENT_ERRORS:
            return False
        except (ValueError, AttributeError):
            return True

    async def _run_here(self, op: str, namespace: str, hex_id: str, name: str | None, label: str,
                        payload: bytes, link: Any = None) -> bytes:
        handler = self._handlers.get(op)
        if handler is None:
            raise RuntimeError(f"this node cannot run calls of kind {op!r}")
        return await handler(namespace, hex_id, name, label, payload, link or _NoLink())  # type: ignore[arg-type]

    # ------------------------------------------------------------------ calls in
    async def _on_request(self, msg: Any) -> None:
        try:
            op, namespace, hex_id, name, label, payload, *caller = msgpack.unpackb(msg.data, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException):
            log.error("a malformed request on %s was dropped", msg.subject)
            return
        if not self.node.owns(object_key(hex_id)):
            return  # not ours (any more): stay silent, the caller finds the owner
        # The caller's run: a WebSocket this call accepts is bridged to it over this link.
        link = self._link(caller[0], caller[1]) if len(caller) == 2 else None
        if link is None and len(caller) == 2:  # a run found gone (it re-registered since): refused
            gone = PeerGone(f"Network connection lost. Node {caller[0]} called from a run that is no longer "
                            "registered; retry")
            with contextlib.suppress(Exception):
                await msg.respond(msgpack.packb([False, self.describe(gone)], use_bin_type=True))
            return
        # Started in order: each call enters its object's queue before the next message is taken.
        task = asyncio.ensure_future(self._serve(msg, op, namespace, hex_id, name, label, payload, link))
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)
        await asyncio.sleep(0)

    async def _serve(self, msg: Any, op: str, namespace: str, hex_id: str, name: str | None, label: str,
                     payload: bytes, link: NodeLink | None = None) -> None:
        self.served += 1
        try:
            answer = [True, await self._run_here(op, namespace, hex_id, name, label, payload, link)]
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            answer = [False, self.describe(e)]
        reg = self.node.registry
        if reg is not None and not reg.writable() and answer[0]:
            return  # self-fenced meanwhile: a success from here may not stand; the caller retries
        try:
            await msg.respond(msgpack.packb(answer, use_bin_type=True))
        except Exception as e:  # noqa: BLE001 - the caller times out and retries
            log.warning("an answer for object %s could not be sent: %s", hex_id, e)

