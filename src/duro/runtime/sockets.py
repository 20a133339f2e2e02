"""One WebSocket connection as the runtime sees it: a :class:`SocketChannel`.

A channel outlives object instances: it is created with a ``WebSocketPair``, accepted by an object
(hibernatable or standard), bound to a transport by the front once the 101 response is sent, and
kept until the connection ends. It owns the outgoing queue: ``send()`` is synchronous for the
object, and a flusher task (owned by the channel) sends the queued frames in order, each one only after the output gate of
the activation that sent it (a message sent after a write leaves once the write is durable).

It never calls user code and never touches storage; delivering incoming frames to objects is the
front's and the api layer's business.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from .tasks import stop_task

if TYPE_CHECKING:
    from ..ids import DurableObjectId
    from .activation import Activation

__all__ = ["SocketChannel", "SocketTransport", "CONNECTING", "OPEN", "CLOSING", "CLOSED",
           "HIBERNATABLE", "STANDARD"]

log = logging.getLogger("duro.websocket")

# readyState values, as the WebSocket standard numbers them.
CONNECTING, OPEN, CLOSING, CLOSED = 0, 1, 2, 3

# How a server end was accepted.
HIBERNATABLE = "hibernatable"  # ctx.accept_websocket(): events go to the class handlers
STANDARD = "standard"  # ws.accept(): events go to event listeners; pins the instance

_TEXT, _BINARY, _CLOSE, _DIRECT_TEXT = 0, 1, 2, 3

_ids = itertools.count(1)


def _own(coro: Any, channel_id: int) -> "asyncio.Task[None]":
    """Start a channel's flusher. The channel owns it (``_flusher``, stopped by ``detach``); a
    flusher drops its reference when it ends, so a crash, which can only be a bug (send failures
    are handled inside), is logged here with its traceback rather than lost with the task."""
    task = asyncio.get_running_loop().create_task(coro, name=f"duro-websocket-flusher {channel_id}")
    task.add_done_callback(_flusher_done)
    return task


def _flusher_done(task: "asyncio.Task[None]") -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("%s crashed", task.get_name(), exc_info=exc)


class SocketTransport(Protocol):
    """What the front gives a channel to move frames: awaitable sends, and a close."""

    async def send_text(self, data: str) -> None: ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class SocketChannel:
    """The server end of one WebSocket connection. Slotted: thousands of them sit idle."""

    __slots__ = ("id", "mode", "ready_state", "tags", "attachment", "auto_response_at", "owner",
                 "object_id", "activation", "listener_socket", "reset_hook", "created", "close_sent", "bridge",
                 "_transport",
                 "_outbox", "_flusher", "_dead", "__weakref__")

    def __init__(self) -> None:
        self.id = next(_ids)
        self.mode: str | None = None
        self.ready_state = CONNECTING
        self.tags: tuple[str, ...] = ()
        self.attachment: bytes | None = None  # codec-encoded; survives hibernation
        self.auto_response_at: float | None = None  # wall-clock seconds of the last auto-response
        self.owner: tuple[str, str] | None = None  # (namespace key, hex id) of a hibernatable socket
        self.object_id: "DurableObjectId | None" = None
        self.activation: "Activation | None" = None  # the instance a standard socket pins
        self.listener_socket: Any = None  # the api object whose listeners get standard events
        self.reset_hook: Any = None  # registered on ``activation.on_reset`` for a standard socket
        self.created = time.monotonic()
        self.close_sent = False  # the server side has called close()
        self.bridge: Any = None  # (link, id) of a connection whose socket is on another worker
        self._transport: SocketTransport | None = None
        self._outbox: collections.deque[tuple[int, Any, "Activation | None"]] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._dead = False  # the transport failed or the connection ended: drop further output

    # ------------------------------------------------------------------ state
    @property
    def attached(self) -> bool:
        return self._transport is not None

    @property
    def accepted(self) -> bool:
        return self.mode is not None

    def statistics(self) -> dict[str, Any]:
        return {"id": self.id, "mode": self.mode, "ready_state": self.ready_state, "tags": list(self.tags),
                "queued": len(self._outbox or ()), "attachment_bytes": len(self.attachment or b"")}

    # ------------------------------------------------------------------ output
    def send(self, data: str | bytes, gate: "Activation | None") -> None:
        """Queue one message; it leaves after ``gate``'s output gate (if any), in order."""
        self._push(_TEXT if isinstance(data, str) else _BINARY, data, gate)

    def send_direct(self, text: str) -> None:
        """Queue a text message that waits for no output gate (auto-responses)."""
        self._push(_DIRECT_TEXT, text, None)

    def close(self, code: int, reason: str, gate: "Activation | None") -> None:
        """Queue a close frame after everything sent so far. Idempotent."""
        if self.close_sent or self.ready_state == CLOSED:
            return
        self.close_sent = True
        self.ready_state = CLOSING
        self._push(_CLOSE, (code, reason), gate)

    def _push(self, kind: int, data: Any, gate: "Activation | None") -> None:
        if self._dead:
            return  # the peer is gone; the close event is on its way to the object
        if self._outbox is None:
            self._outbox = collections.deque()
        transport = self._transport
        if (transport is not None and self._flusher is None and not self._outbox
                and (gate is None or gate.output_open())):
            # Fast path (a broadcast to many idle sockets): nothing queued and nothing to wait
            # for, so hand the frame to the transport now, without a task.
            self._write_now(transport, kind, data)
            return
        self._outbox.append((kind, data, gate))
        if transport is not None and self._flusher is None:
            self._flusher = _own(self._flush(), self.id)

    def _write_now(self, transport: SocketTransport, kind: int, data: Any) -> None:
        if kind == _TEXT or kind == _DIRECT_TEXT:
            coro = transport.send_text(data)
        elif kind == _BINARY:
            coro = transport.send_bytes(data)
        else:
            coro = transport.close(*data)
        try:
            waiting_on = coro.send(None)
        except StopIteration:
            return  # sent without suspending: the usual case
        except Exception as e:
            log.debug("WebSocket %d: send failed: %s", self.id, e)
            self._dead = True
            return
        # The transport is applying back-pressure: a flusher task finishes this send, and later
        # frames queue behind it.
        self._flusher = _own(self._finish_send(coro, waiting_on), self.id)

    async def _finish_send(self, coro: Any, waiting_on: Any) -> None:
        try:
            while True:
                if waiting_on is None:
                    await asyncio.sleep(0)
                else:
                    # Take over the wait as a Task would: clear the future's "blocking" flag
                    # (the asyncio future protocol), await it, then resume the send.
                    waiting_on._asyncio_future_blocking = False
                    try:
                        await waiting_on
                    except asyncio.CancelledError:
                        if (t := asyncio.current_task()) is not None and t.cancelling():
                            coro.close()
                            raise
                    except Exception:
                        pass  # the send coroutine sees the error when resumed
                try:
                    waiting_on = coro.send(None)
                except StopIteration:
                    break
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.debug("WebSocket %d: send failed: %s", self.id, e)
            self._dead = True
            if self._outbox:
                self._outbox.clear()
            self._flusher = None
            return
        self._flusher = None
        if self._outbox and not self._dead and self._transport is not None:
            self._flusher = _own(self._flush(), self.id)

    async def _flush(self) -> None:
        outbox = self._outbox
        assert outbox is not None
        try:
            while outbox and not self._dead:
                kind, data, gate = outbox[0]
                if gate is not None:
                    try:
                        await gate.output_gate()
                    except asyncio.CancelledError:
                        raise
                    except Exception as e:  # the write before this message failed: it must not leave
                        log.debug("dropping a WebSocket message: its object was reset (%s)", e)
                        outbox.popleft()
                        if kind == _CLOSE and self.ready_state == CLOSING:
                            if self.mode == STANDARD:
                                # A standard socket dies with its instance, which this reset ended.
                                outbox.appendleft((_CLOSE, (1011, "Durable Object reset"), None))
                            else:
                                # The close is discarded with the other held outputs: the socket
                                # stays open, so the next instance can still use it and close it.
                                self.close_sent = False
                                self.ready_state = OPEN
                        continue
                outbox.popleft()
                transport = self._transport
                if transport is None:
                    break
                try:
                    if kind == _TEXT or kind == _DIRECT_TEXT:
                        await transport.send_text(data)
                    elif kind == _BINARY:
                        await transport.send_bytes(data)
                    else:
                        await transport.close(*data)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # the connection is gone; its end is reported by the front
                    log.debug("WebSocket %d: send failed: %s", self.id, e)
                    self._dead = True
                    outbox.clear()
        finally:
            self._flusher = None

    # ------------------------------------------------------------------ binding to the front
    def attach(self, transport: SocketTransport) -> None:
        """The 101 response went out: start moving queued frames."""
        self._transport = transport
        if self.ready_state == CONNECTING:
            self.ready_state = OPEN
        if self._outbox and self._flusher is None:
            self._flusher = _own(self._flush(), self.id)

    def abandon(self) -> None:
        """The connection will never start (no 101 went out): drop what was queued for it."""
        self.ready_state = CLOSED
        self._dead = True
        self._outbox = None

    async def detach(self) -> None:
        """The connection ended: drop unsent frames, stop the flusher and wait for it."""
        self.ready_state = CLOSED
        self._dead = True
        self._transport = None
        if self._outbox:
            self._outbox.clear()
        task = self._flusher
        await stop_task(task)

    def __repr__(self) -> str:
        return f"<SocketChannel {self.id} {self.mode or 'new'} state={self.ready_state}>"
