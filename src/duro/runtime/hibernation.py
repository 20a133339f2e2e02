"""The hibernation registry: every object's hibernatable WebSockets, kept apart from its instance.

Entries are keyed by (namespace key, hex id), not by activation, because hibernation *replaces* the
activation: the runtime's sweeper drops the instance of an object whose only work is open
hibernatable sockets (after ``limits.hibernation_timeout``), and the next event builds a fresh one
that finds its sockets, their tags and attachments, the auto-response pair and the event timeout
here. Auto-responses are answered from here without waking the object.

This module checks the Cloudflare limits (tags, attachment size, sockets per object, auto-response
size, event timeout) with Cloudflare's texts. It never calls user code.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from ..errors import InvalidInputError, OverloadedError
from .sockets import CLOSED, HIBERNATABLE, SocketChannel

if TYPE_CHECKING:
    from ..ids import DurableObjectId

__all__ = ["HibernationRegistry", "ObjectSockets", "MAX_SOCKETS_PER_OBJECT", "MAX_TAGS", "MAX_TAG_LENGTH",
           "MAX_ATTACHMENT_BYTES", "MAX_AUTO_RESPONSE_BYTES", "MAX_EVENT_TIMEOUT_MS", "PENDING_TIMEOUT_S"]

MAX_SOCKETS_PER_OBJECT = 32768
MAX_TAGS = 10
MAX_TAG_LENGTH = 256
MAX_ATTACHMENT_BYTES = 16384
MAX_AUTO_RESPONSE_BYTES = 2048
MAX_EVENT_TIMEOUT_MS = 604_800_000
PENDING_TIMEOUT_S = 30.0  # an accepted socket whose 101 never went out is dropped after this

TEXT_TOO_MANY_SOCKETS = (f"only {MAX_SOCKETS_PER_OBJECT} websockets can be accepted on a single Durable Object "
                         "instance")
TEXT_TOO_MANY_TAGS = f"a Hibernatable WebSocket cannot have more than {MAX_TAGS} tags"
TEXT_EVENT_TIMEOUT = f"Event timeout should not exceed {MAX_EVENT_TIMEOUT_MS} ms."


def tag_too_long_text(tag: str) -> str:
    return f'"{tag}" is longer than the max tag length ({MAX_TAG_LENGTH} characters).'


def attachment_too_large_text(size: int) -> str:
    # Cloudflare's text, missing space included.
    return (f"A WebSocket 'attachment' cannot be larger than {MAX_ATTACHMENT_BYTES} bytes."
            f"'attachment' was {size} bytes.")


def auto_response_too_large_text(which: str, size: int) -> str:
    return (f"{which.capitalize()} cannot be larger than {MAX_AUTO_RESPONSE_BYTES} bytes. "
            f"A {which} of size {size} was provided.")


def check_tags(tags: Any) -> tuple[str, ...]:
    """Validate and de-duplicate tags (order kept)."""
    if tags is None:
        return ()
    if isinstance(tags, str):
        raise TypeError("tags must be a list of strings, not a string")
    out: dict[str, None] = {}
    for tag in tags:
        if not isinstance(tag, str):
            raise TypeError(f"a WebSocket tag must be a string, not {type(tag).__name__}")
        if len(tag) > MAX_TAG_LENGTH:
            raise InvalidInputError(tag_too_long_text(tag))
        out[tag] = None
    if len(out) > MAX_TAGS:
        raise InvalidInputError(TEXT_TOO_MANY_TAGS)
    return tuple(out)


class ObjectSockets:
    """One object's hibernatable sockets and settings."""

    __slots__ = ("key", "object_id", "channels", "auto_response", "event_timeout_ms")

    def __init__(self, key: tuple[str, str], object_id: "DurableObjectId") -> None:
        self.key = key
        self.object_id = object_id
        self.channels: dict[int, SocketChannel] = {}  # in accept order
        self.auto_response: tuple[str, str] | None = None
        self.event_timeout_ms: int | None = None

    def sockets(self, tag: str | None = None) -> list[SocketChannel]:
        """Accepted sockets not yet fully closed (a socket we are closing is still listed)."""
        if tag is None:
            return [c for c in self.channels.values() if c.ready_state != CLOSED]
        return [c for c in self.channels.values() if c.ready_state != CLOSED and tag in c.tags]


class HibernationRegistry:
    """Every object's hibernatable sockets in this process. Owned by the :class:`Runtime`."""

    def __init__(self) -> None:
        self._objects: dict[tuple[str, str], ObjectSockets] = {}

    def get(self, unique_key: str, hex_id: str) -> ObjectSockets | None:
        return self._objects.get((unique_key, hex_id))

    def entry(self, unique_key: str, object_id: "DurableObjectId") -> ObjectSockets:
        key = (unique_key, str(object_id))
        ent = self._objects.get(key)
        if ent is None:
            ent = self._objects[key] = ObjectSockets(key, object_id)
        elif ent.object_id.name is None and object_id.name is not None:
            ent.object_id = object_id
        return ent

    def has_sockets(self, unique_key: str, hex_id: str) -> bool:
        ent = self._objects.get((unique_key, hex_id))
        return ent is not None and bool(ent.channels)

    def accept(self, unique_key: str, object_id: "DurableObjectId", channel: SocketChannel, tags: Any) -> None:
        """Make ``channel`` a hibernatable socket of the object (limits checked first)."""
        checked = check_tags(tags)
        ent = self.entry(unique_key, object_id)
        if len(ent.channels) >= MAX_SOCKETS_PER_OBJECT:
            raise OverloadedError(TEXT_TOO_MANY_SOCKETS)
        channel.mode = HIBERNATABLE
        channel.tags = checked
        channel.owner = ent.key
        channel.object_id = ent.object_id
        ent.channels[channel.id] = channel

    def remove(self, channel: SocketChannel) -> None:
        if channel.owner is None:
            return
        ent = self._objects.get(channel.owner)
        if ent is not None:
            ent.channels.pop(channel.id, None)

    def sweep(self, now: float, is_live: Callable[[str, str], bool]) -> int:
        """Drop accepted sockets whose 101 response never went out, and entries of objects with
        no socket and no live instance. Returns how many sockets were dropped."""
        dropped = 0
        for key, ent in list(self._objects.items()):
            for ch in list(ent.channels.values()):
                if not ch.attached and ch.ready_state != CLOSED and now - ch.created >= PENDING_TIMEOUT_S:
                    ch.abandon()
                    del ent.channels[ch.id]
                    dropped += 1
            if not ent.channels and not is_live(*key):
                del self._objects[key]
        return dropped

    def socket_counts(self) -> list[tuple[tuple[str, str], int]]:
        """(namespace key, hex id) and the number of open sockets, of every object that has some."""
        return [(key, len(ent.channels)) for key, ent in self._objects.items() if ent.channels]

    def listing(self) -> list[dict[str, Any]]:
        """Every object with open hibernatable sockets, for the admin dashboard: its namespace key,
        ID, name, and per socket its id, tags, state and age in seconds."""
        now = time.monotonic()
        out = []
        for (key, hex_id), ent in self._objects.items():
            socks = [{"id": c.id, "tags": list(c.tags), "state": c.ready_state, "age_s": round(now - c.created, 1)}
                     for c in ent.channels.values() if c.ready_state != CLOSED]
            if socks:
                out.append({"namespace": key, "id": hex_id, "name": ent.object_id.name, "sockets": socks})
        return out

    def statistics(self) -> dict[str, Any]:
        return {"objects": len(self._objects), "sockets": sum(len(e.channels) for e in self._objects.values())}

