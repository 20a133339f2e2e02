"""Calls between cluster nodes: the worker router's interface (``runtime/router.py``) over NATS.

``owner(hex_id)`` is this node's name when it owns the object, else a token naming the object
(whoever owns it); ``call()`` sends the call as a NATS request on the object's subject
``duro.o.<key>``, where only its owner listens, and returns the answer's bytes; ``handle()``
installs what runs a call of a kind here (``api/forwarding.py`` installs fetch and rpc, unchanged).
A request and its answer are msgpack arrays: ``[op, namespace, hex_id, name, label, payload]`` and
``[ok, payload]`` (``ok`` false: ``payload`` describes the exception).

"No responders" means nobody owns the object: this node claims it (``ClusterNode.acquire``) and
runs the call itself. A claim that loses (a live node holds the lease but is not listening yet,
say while it rebuilds) is retried until the call's deadline. A request that times out checks the
owner: if its registration is gone (a hung or dead node whose connection NATS has not dropped yet)
this node claims the object, else the caller gets a retryable error.

Never: run a call for an object this node does not own, or answer one while this node may not write.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

import msgpack
import nats.errors

from ..errors import DuroError
from ..runtime.router import Handler, OneWay, PeerGone, TakenHere, _Failed
from .leases import OWNERS_BUCKET, TRANSIENT_ERRORS, ClusterUnavailableError, LeaseHeldError, SelfFencedError, \
    _leader_get, object_key
from .node import ClusterNode

__all__ = ["ClusterRouter", "ClusterSlot", "REMOTE"]

log = logging.getLogger("duro.cluster")

REMOTE = "@"  # owner(hex_id) of an object this node does not own: "@<hex_id>"


@dataclass(frozen=True)
class ClusterSlot:
    """This node's place, as the worker router's users see it: ``index`` is the node's name;
    ``count`` 1 (the per-machine fan-outs of metrics and tails stay on this node)."""

    index: str
    count: int = 1


class _NoLink:
    """A NATS request has no connection to post one-way messages back on (WebSockets are not
    bridged between nodes yet)."""

    closed = False

    def post(self, op: str, payload: bytes) -> bool:
        return False

    def on_close(self, callback: Callable[[], None]) -> None:
        pass


class ClusterRouter:
    """The calls between this node and the others (module doc)."""

    # Between machines: WebSockets are not bridged, and /metrics and tails stay per node (not yet).
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
        node.on_request = self._on_request

    # ------------------------------------------------------------------ ownership
    def owner(self, hex_id: str) -> str:
        return self.slot.index if self.node.owns(object_key(hex_id)) else REMOTE + hex_id

    def is_local(self, hex_id: str) -> bool:
        return self.node.owns(object_key(hex_id))

    def metrics(self) -> list[Any]:
        """This node's ``duro_cluster_*`` metrics, for ``/metrics`` (``cluster/metrics.py``)."""
        from .metrics import cluster_metrics
        return cluster_metrics(self)

    # ------------------------------------------------------------------ set-up
    def handle(self, op: str, fn: Handler) -> None:
        self._handlers[op] = fn

    def handle_one_way(self, op: str, fn: OneWay) -> None:
        pass  # one-way messages (bridged WebSockets, tails) do not cross nodes yet

    async def start(self) -> None:
        pass  # the node connected and registered before the server started

    async def close(self) -> None:
        for t in list(self._serving):
            t.cancel()
        await self.node.close()

    def link_to(self, index: Any) -> Any:
        return _NoLink()

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
        data = msgpack.packb([op, namespace, hex_id, name, label, payload], use_bin_type=True)
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
                        payload: bytes) -> bytes:
        handler = self._handlers.get(op)
        if handler is None:
            raise RuntimeError(f"this node cannot run calls of kind {op!r}")
        return await handler(namespace, hex_id, name, label, payload, _NoLink())  # type: ignore[arg-type]

    # ------------------------------------------------------------------ calls in
    async def _on_request(self, msg: Any) -> None:
        try:
            op, namespace, hex_id, name, label, payload = msgpack.unpackb(msg.data, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException):
            log.error("a malformed request on %s was dropped", msg.subject)
            return
        if not self.node.owns(object_key(hex_id)):
            return  # not ours (any more): stay silent, the caller finds the owner
        # Started in order: each call enters its object's queue before the next message is taken.
        task = asyncio.ensure_future(self._serve(msg, op, namespace, hex_id, name, label, payload))
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)
        await asyncio.sleep(0)

    async def _serve(self, msg: Any, op: str, namespace: str, hex_id: str, name: str | None, label: str,
                     payload: bytes) -> None:
        self.served += 1
        try:
            answer = [True, await self._run_here(op, namespace, hex_id, name, label, payload)]
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

