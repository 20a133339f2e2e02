"""Which worker process owns an object, and calls to it from the others (DESIGN.md §4).

With ``duro serve --workers N`` every object has exactly one owner among the N workers, chosen by
rendezvous hashing of its ID over the worker indexes: the same on every worker, no table to
share, and an object never moves while N stays the same. Any worker accepts any connection and
runs the entrypoint there; a call (``fetch``, RPC, a WebSocket event) for an object another worker
owns crosses a Unix socket to that worker as one frame, and its answer comes back as one frame.

Frames are a 4-byte big-endian length and a msgpack array. A request is
``[call_id, op, namespace, hex_id, name, label, payload]`` (and, with OpenTelemetry traces on, the
caller's trace context as an eighth element), an answer ``[call_id, ok, payload]``
(``ok`` false: ``payload`` describes the exception, ``namespace.describe_exception``). A one-way
message (a bridged WebSocket's frame, say) has call id 0, goes either way over a connection (a
:class:`Link`) and gets no answer. What the payload holds
is the concern of whoever installed the handler for ``op`` (:meth:`Router.handle`); this module
moves bytes and matches answers to calls.

The transport is the one interface a cluster of machines implements again over NATS (§5):
``owner_of``, ``call``, ``send``, ``handle``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import pathlib
import struct
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import msgpack

from ..errors import DuroError

__all__ = ["WorkerSlot", "Router", "Link", "owner_of", "PeerGone", "TakenHere", "failure_state"]

log = logging.getLogger("duro.router")

_LEN = struct.Struct(">I")
MAX_FRAME = 1 << 30  # a frame larger than this is a broken peer, not a call
BYE = "__bye__"  # one-way, owner to caller: this worker is retiring, send no more calls on this link
RETIRED_CONNECT_S = 30.0  # how long a caller waits for a retired worker's successor to listen


class PeerGone(DuroError):
    """The worker that owns the object went away while the call was on its way (it is being
    restarted): the call may or may not have run there. Cloudflare's text for a lost connection
    to an object, and retryable as it is."""

    retryable = True


class TakenHere(Exception):
    """Raised by a router's ``call`` when the object became this process's own while the call was
    on its way (a cluster node claimed an object nobody owned): the caller runs it here."""


@dataclass(frozen=True)
class WorkerSlot:
    """This process's place among the workers: ``index`` of ``count``, their sockets in ``sockets``."""

    index: int
    count: int
    sockets: pathlib.Path

    def socket_path(self, index: int) -> pathlib.Path:
        return self.sockets / f"w{index}.sock"


def owner_of(hex_id: str, count: int) -> int:
    """The worker (0..count-1) that owns the object ``hex_id``: the highest score of
    hash(worker, id). Removing or adding a worker moves only the objects it gains or loses."""
    if count <= 1:
        return 0
    best, owner = b"", 0
    raw = hex_id.encode()
    for w in range(count):
        score = hashlib.blake2b(raw, digest_size=8, salt=w.to_bytes(8, "little")).digest()
        if score > best:
            best, owner = score, w
    return owner


class Link:
    """One connection between two workers, as a handler sees it: ``post`` sends a one-way
    message back over it (after everything written on it so far), ``on_close`` runs a callback
    once it is gone (its other end died, say). A bridged WebSocket lives on the link its
    handshake came over, so its frames keep their order with the answer that opened it."""

    def __init__(self) -> None:
        self.writer: asyncio.StreamWriter | None = None
        self._on_close: list[Callable[[], None]] = []
        self.closed = False

    def post(self, op: str, payload: bytes) -> bool:
        """Send a one-way message; False if the link is gone."""
        w = self.writer
        if w is None or w.is_closing():
            return False
        w.write(_frame([0, op, "", "", None, "", payload]))
        return True

    def on_close(self, callback: Callable[[], None]) -> None:
        if self.closed:
            callback()
        else:
            self._on_close.append(callback)

    def _closed(self) -> None:
        if self.closed:
            return
        self.closed = True
        callbacks, self._on_close = self._on_close, []
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.exception("cleaning up after a closed link to another worker failed")


# A call: (namespace, hex_id, name, label, payload, link) -> the answer's bytes. A one-way message:
# the same, returning nothing.
Handler = Callable[[str, str, str | None, str, bytes, Link], Awaitable[bytes]]
OneWay = Callable[[str, str, str | None, str, bytes, Link], None]


class _Peer:
    """This worker's connection to worker ``index``: calls out, answers matched by call id, and
    one-way messages both ways. Made again after the other worker restarts (a new :class:`Link`)."""

    def __init__(self, router: "Router", index: int) -> None:
        self.router = router
        self.index = index
        self.writer: asyncio.StreamWriter | None = None
        self.link = Link()
        self.pending: dict[int, asyncio.Future[bytes]] = {}  # the current link's calls
        self.retired = False  # the worker said bye: its successor is starting
        self._connecting: asyncio.Future[None] | None = None
        self._reader_task: asyncio.Task[None] | None = None

    async def connected(self) -> asyncio.StreamWriter:
        if self.writer is not None and not self.writer.is_closing():
            return self.writer
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None
        assert self.writer is not None
        return self.writer

    async def _connect(self) -> None:
        path = str(self.router.slot.socket_path(self.index))
        wait = RETIRED_CONNECT_S if self.retired else self.router.connect_timeout
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(path, limit=MAX_FRAME)
                break
            except (FileNotFoundError, ConnectionRefusedError) as e:
                # The owner is starting (or restarting after a crash): wait for it, bounded.
                if asyncio.get_running_loop().time() >= deadline:
                    raise PeerGone(f"Network connection lost. Worker {self.index} is not running (its socket {path}: {e.strerror}); "
                                   "it is being restarted, retry the request") from None
                await asyncio.sleep(0.02)
        self.retired = False
        self.writer = writer
        self.link = Link()
        self.link.writer = writer
        self.pending = {}
        self._reader_task = asyncio.ensure_future(self._read(reader, writer, self.link, self.pending))

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: Link,
                    pending: dict[int, "asyncio.Future[bytes]"]) -> None:
        bye = False
        try:
            while not (bye and not pending):
                frame = await _read_frame(reader)
                if frame is None:
                    break
                if len(frame) != 3:  # a one-way message from the other worker
                    if frame[1] == BYE:
                        # It retires: calls already sent are answered on this link; new ones go to
                        # its successor (a new connection), and the link ends once these are answered.
                        bye = self.retired = True
                        if self.writer is writer:
                            self.writer = None
                        continue
                    self.router._one_way_in(frame, link)
                    continue
                call_id, ok, payload = frame
                fut = pending.pop(call_id, None)
                if fut is not None and not fut.done():
                    if ok:
                        fut.set_result(payload)
                    else:
                        fut.set_exception(_Failed(payload))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if self.writer is writer:
                self.writer = None
            writer.close()
            link._closed()
            if self.pending is pending:
                self.pending = {}
            for fut in pending.values():
                if not fut.done():
                    fut.set_exception(PeerGone(
                        f"Network connection lost. Worker {self.index} went away during the call (it is being restarted); the call "
                        "may or may not have run: retry only if it is safe to"))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()


class _Failed(Exception):
    """An answer that says the call raised: ``state`` describes the exception."""

    def __init__(self, state: Any) -> None:
        super().__init__("remote failure")
        self.state = state


class Router:
    """The calls between this worker and the others. ``handle(op, fn)`` installs what runs a call
    of kind ``op`` here; ``call`` runs one on the owner and returns its answer."""

    def __init__(self, slot: WorkerSlot, *, connect_timeout: float = 5.0) -> None:
        self.slot = slot
        # How a failed call is described to its caller (the api layer installs its own, which
        # keeps the exception's type and Cloudflare's flags).
        self.describe: Callable[[BaseException], Any] = lambda e: {"message": str(e)}
        self.connect_timeout = connect_timeout
        self._peers: dict[int, _Peer] = {}
        self._handlers: dict[str, Handler] = {}
        self._one_way: dict[str, OneWay] = {}
        self._server: asyncio.AbstractServer | None = None
        self._next_id = 1
        self._owners: dict[str, int] = {}
        self._serving: set[asyncio.Task[Any]] = set()
        self._links: set[Link] = set()  # connections other workers opened to this one
        self._cut: BaseException | None = None  # the answer to calls a retirement stops
        # WebSockets across workers (installed by the front, ``http/bridge.py``): the owner's side
        # takes the server end an object accepted and gives it a bridge id on the caller's link;
        # the caller's side makes the channel its connection feeds.
        self.bridge_accept: Callable[[Any, Link], int] | None = None
        self.bridge_proxy: Callable[[Link, int], Any] | None = None
        self.forwarded = 0  # calls sent to another worker
        # OpenTelemetry (``tracing.py`` installs them): the current trace context as a dict to send
        # with a call, and a context manager that makes a received one current while it runs.
        self.trace_out: Callable[[], dict[str, str]] | None = None
        self.trace_in: Callable[[dict[str, str]], Any] | None = None
        self.served = 0  # calls run here for another worker

    # ------------------------------------------------------------------ ownership
    def owner(self, hex_id: str) -> int:
        owner = self._owners.get(hex_id)
        if owner is None:
            if len(self._owners) > 200_000:
                self._owners.clear()
            owner = self._owners[hex_id] = owner_of(hex_id, self.slot.count)
        return owner

    def is_local(self, hex_id: str) -> bool:
        return self.owner(hex_id) == self.slot.index

    # ------------------------------------------------------------------ set-up
    def handle(self, op: str, fn: Handler) -> None:
        self._handlers[op] = fn

    def handle_one_way(self, op: str, fn: OneWay) -> None:
        self._one_way[op] = fn

    async def start(self) -> None:
        path = self.slot.socket_path(self.slot.index)
        path.unlink(missing_ok=True)  # left by this slot's previous process
        self._server = await asyncio.start_unix_server(self._serve, str(path), limit=MAX_FRAME)
        os.chmod(path, 0o600)

    async def wait_served(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until no call from another worker is running here:
        at a graceful stop, calls forwarded to this worker get the drain time as its own requests
        do. False if some were still running."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._serving:
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def retire(self, timeout: float, cut: BaseException | None = None) -> bool:
        """Hand this worker's objects over to its successor (a code reload): accept no new
        connection, tell every caller on an open one to send no more calls there, answer the calls
        already sent, and wait until the callers have closed their ends (at most ``timeout``
        seconds). Calls sent after this go to the successor once it listens: none is lost or cut
        off. Calls still running after ``timeout`` are answered with ``cut`` (and stopped), if given.
        False if some did not finish in time."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for link in list(self._links):
            link.post(BYE, b"")
        deadline = asyncio.get_running_loop().time() + timeout
        while self._links or self._serving:
            if asyncio.get_running_loop().time() >= deadline:
                if cut is not None:
                    self._cut = cut
                    for task in list(self._serving):
                        task.cancel()
                return False
            await asyncio.sleep(0.01)
        return True

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for peer in self._peers.values():
            peer.close()
        self._peers.clear()
        for t in list(self._serving):
            t.cancel()

    # ------------------------------------------------------------------ calls out
    def _peer(self, index: int) -> _Peer:
        peer = self._peers.get(index)
        if peer is None:
            peer = self._peers[index] = _Peer(self, index)
        return peer

    async def call(self, index: int, op: str, namespace: str, hex_id: str, name: str | None, label: str,
                   payload: bytes, *, sent: Callable[[], None] | None = None) -> bytes:
        """Run ``op`` on worker ``index`` and return its answer. ``sent`` is called once the frame
        is written (calls on one connection reach the owner in the order they were sent). Raises
        the callee's exception as ``_Failed`` (its ``state``), or :class:`PeerGone`."""
        peer = self._peer(index)
        writer = await peer.connected()
        call_id = self._next_id
        self._next_id += 1
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        peer.pending[call_id] = fut
        frame = [call_id, op, namespace, hex_id, name, label, payload]
        if self.trace_out is not None:
            frame.append(self.trace_out())
        writer.write(_frame(frame))
        self.forwarded += 1
        if sent is not None:
            sent()
        return await fut

    def link_to(self, index: int) -> Link:
        """The current link of this worker's connection to worker ``index`` (after a call)."""
        return self._peer(index).link

    # A WebSocket bridge is named in the 101 the owner answers (``BRIDGE_HEADER``): the owner makes
    # the name of bridge ``bridge`` on its side; the caller finds the link and the bridge from it.
    # Between workers the name is the number (the link is the one the call went over); a cluster
    # node's name also says which run of which node holds the socket (``cluster/router.py``).
    def bridge_token(self, bridge: int) -> str:
        return str(bridge)

    def bridge_link(self, owner: Any, token: str) -> tuple[Link, int]:
        return self.link_to(owner), int(token or 0)

    # ------------------------------------------------------------------ calls in
    def _one_way_in(self, frame: list[Any], link: Link) -> None:
        _, op, namespace, hex_id, name, label, payload = frame
        one_way = self._one_way.get(op)
        if one_way is None:
            log.error("a message of unknown kind %r from another worker was dropped", op)
            return
        try:
            one_way(namespace, hex_id, name, label, payload, link)
        except Exception:
            log.exception("a %s message from another worker failed", op)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = Link()
        link.writer = writer
        self._links.add(link)
        try:
            while True:
                frame = await _read_frame(reader)
                if frame is None:
                    break
                call_id = frame[0]
                if call_id == 0:
                    self._one_way_in(frame, link)
                    continue
                _, op, namespace, hex_id, name, label, payload = frame[:7]
                trace = frame[7] if len(frame) > 7 and self.trace_in is not None else None
                # Started in order: each call enters its object's queue before the next frame is read.
                task = asyncio.ensure_future(self._run(link, call_id, op, namespace, hex_id, name, label, payload,
                                                       trace))
                self._serving.add(task)
                task.add_done_callback(self._serving.discard)
                await asyncio.sleep(0)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._links.discard(link)
            writer.close()
            link._closed()

    async def _run(self, link: Link, call_id: int, op: str, namespace: str, hex_id: str,
                   name: str | None, label: str, payload: bytes, trace: dict[str, str] | None = None) -> None:
        self.served += 1
        handler = self._handlers.get(op)
        writer = link.writer
        assert writer is not None
        try:
            if handler is None:
                raise RuntimeError(f"this worker cannot run calls of kind {op!r}")
            if trace and self.trace_in is not None:
                with self.trace_in(trace):  # the caller's span is the parent of what runs here
                    answer = [call_id, True, await handler(namespace, hex_id, name, label, payload, link)]
            else:
                answer = [call_id, True, await handler(namespace, hex_id, name, label, payload, link)]
        except asyncio.CancelledError:
            if self._cut is not None and not writer.is_closing():
                writer.write(_frame([call_id, False, self.describe(self._cut)]))
            raise
        except BaseException as e:
            answer = [call_id, False, self.describe(e)]
        if not writer.is_closing():
            writer.write(_frame(answer))


def _frame(value: Any) -> bytes:
    body = msgpack.packb(value, use_bin_type=True)
    return _LEN.pack(len(body)) + body


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise
    (n,) = _LEN.unpack(head)
    if n > MAX_FRAME:
        raise ConnectionError(f"a frame of {n} bytes from another worker: the connection is broken")
    return msgpack.unpackb(await reader.readexactly(n), raw=False)


def failure_state(exc: BaseException) -> Any:
    """The description a failed call carried (``_Failed``), or None for any other exception."""
    return exc.state if isinstance(exc, _Failed) else None
