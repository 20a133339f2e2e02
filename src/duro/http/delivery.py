"""Delivering WebSocket events from the front to objects.

The front's connection coroutine (:mod:`duro.http.websocket`) reads frames; this module turns each
one into an event for the socket's object: through the object's input gate, to its class handlers
(``websocket_message`` / ``websocket_close`` / ``websocket_error``, for a hibernatable socket, waking
the object if it hibernated) or to its listeners (a standard socket). Auto-responses are answered
here without waking the object. It also takes a socket out of the registry when its connection
ends.

It uses the api layer only through its public functions (``server_channel``, ``handle_for``,
``drop_handle``, ``unpin``, ``dispatch``, ``find_handler``, ``call_handler``) and never raises an
event's failure to the connection: it is logged, and an overloaded object's socket is closed 1013.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from ..api.namespace import call_handler, find_handler
from ..api.websocket import (
    CloseEvent, ErrorEvent, MessageEvent, dispatch, drop_handle, handle_for, server_channel, unpin,
)
from ..errors import ObjectResetError, OverloadedError
from ..runtime.sockets import CLOSED, HIBERNATABLE, STANDARD, SocketChannel
from .guard import BurstLog

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["response_channel", "unlist", "release", "try_auto_response", "deliver"]

log = logging.getLogger("duro.websocket")
_overloaded = BurstLog(log)  # one line per burst of sockets closed for overload


def response_channel(resp: Any) -> SocketChannel | None:
    """The server channel behind a 101 response's ``web_socket`` (the client end), or None."""
    return server_channel(getattr(resp, "web_socket", None))


def unlist(runtime: "Runtime", channel: SocketChannel) -> None:
    """The connection ended: the socket leaves ``get_websockets()`` (before its close event)."""
    channel.ready_state = CLOSED
    if channel.mode == HIBERNATABLE:
        runtime.hibernation.remove(channel)


def release(runtime: "Runtime", channel: SocketChannel) -> None:
    """Forget a channel whose connection ended (or never started): leave the registry, unpin."""
    channel.ready_state = CLOSED
    if channel.bridge is not None:  # a connection whose socket is on another worker
        runtime.bridges.forget(channel)  # type: ignore[attr-defined]
    elif channel.mode == HIBERNATABLE:
        runtime.hibernation.remove(channel)
        # The close event has been delivered (with this handle): the instance can let it go.
        drop_handle(runtime.find(*channel.owner) if channel.owner is not None else None, channel)
    elif channel.mode == STANDARD:
        unpin(channel)


def try_auto_response(runtime: "Runtime", channel: SocketChannel, text: str) -> bool:
    """Answer ``text`` from the object's auto-response pair without waking it."""
    owner = channel.owner
    if owner is None:
        return False
    ent = runtime.hibernation.get(*owner)
    if ent is None or ent.auto_response is None or ent.auto_response[0] != text:
        return False
    channel.auto_response_at = time.time()
    channel.send_direct(ent.auto_response[1])
    return True


async def deliver(runtime: "Runtime", channel: SocketChannel, kind: str, *args: Any) -> None:
    """Deliver one event (``websocket_message`` / ``websocket_close`` / ``websocket_error``) to the
    socket's object through its input gate; errors are logged, never raised."""
    try:
        if channel.mode == HIBERNATABLE:
            await _deliver_hibernatable(runtime, channel, kind, args)
        elif channel.mode == STANDARD:
            await _deliver_standard(channel, kind, args)
    except asyncio.CancelledError:
        raise
    except OverloadedError as e:
        _overloaded.note(str(e), f"WebSocket {channel.id}: {e}; closing it with 1013")
        if not channel.close_sent:
            channel.close(1013, "Durable Object is overloaded", None)
    except ObjectResetError as e:
        log.warning("WebSocket %d: %s failed, the object was reset: %s", channel.id, kind, e)
    except Exception:
        log.exception("WebSocket %d: %s handler failed", channel.id, kind)


async def _deliver_hibernatable(runtime: "Runtime", channel: SocketChannel, kind: str, args: tuple[Any, ...]) -> None:
    assert channel.owner is not None and channel.object_id is not None
    unique_key = channel.owner[0]
    entry = runtime.classes.get(unique_key)
    if entry is not None and entry.cls is not None and find_handler(entry.cls, kind) is None:
        if kind == "websocket_message":
            log.warning("%s has no webSocketMessage() handler; a message was dropped", entry.class_name)
        return  # nothing to call: do not wake the object
    ent = runtime.hibernation.get(*channel.owner)
    timeout_ms = ent.event_timeout_ms if ent is not None else None
    act = runtime.activation(unique_key, channel.object_id)

    async def event(instance: Any) -> None:
        ws = handle_for(act, channel)
        if timeout_ms:
            async with asyncio.timeout(timeout_ms / 1000):
                await call_handler(instance, kind, ws, *args)
        else:
            await call_handler(instance, kind, ws, *args)

    await act.run(event, size=_size(args), kind="websocket", label=kind)


_LISTENER_EVENTS = {"websocket_message": MessageEvent, "websocket_close": CloseEvent, "websocket_error": ErrorEvent}


async def _deliver_standard(channel: SocketChannel, kind: str, args: tuple[Any, ...]) -> None:
    ws = channel.listener_socket
    if ws is None:
        return
    ev = _LISTENER_EVENTS[kind](*args)
    act = channel.activation
    if act is None:  # accepted outside any object (a stateless entrypoint)
        await dispatch(ws, ev)
        return
    if act.broken is not None:
        return

    async def event(instance: Any) -> None:
        await dispatch(ws, ev)

    await act.run(event, size=_size(args), kind="websocket", label=kind)


def _size(args: tuple[Any, ...]) -> int:
    """A message's payload, for the object's queued-bytes bound (``max_queued_bytes``)."""
    data = args[0] if args else None
    return len(data) if isinstance(data, (str, bytes)) else 0
