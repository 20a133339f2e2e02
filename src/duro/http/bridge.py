"""WebSockets across worker processes (and cluster nodes): the connection stays with the worker that
accepted it, the socket with the object's worker, and the two are bridged (DESIGN.md §4).

When the entrypoint on worker A upgrades a request for an object owned by worker O, the object's
``fetch`` runs on O and accepts the server end there, hibernatable or standard: the socket is in O's
registry, so ``get_websockets``, tags, attachments, auto-responses, hibernation and broadcasts are
exactly as on one process. O gives the socket a transport that posts its outgoing frames over the
link the handshake came on (``ws.out``), and answers the 101 with the bridge's id; A makes a
*bridged* channel for its connection. Frames from the client go from A to O on the same link
(``ws.in``) and are delivered there through the object's input gate as local ones are; frames to
the client come back in order after the 101. The output gate is the object's, on O.

Ends: the client leaves (A posts its disconnect; O delivers the close event as for a local
socket); the object closes (the close frame goes to A, which closes the connection); worker O dies
(A closes its connections with 1012, "service restart": the object and its sockets are gone);
worker A dies (O delivers ``websocket_close`` 1006 to the object, as for a client that vanished).

Between cluster nodes the same machinery runs over a link of ``cluster/router.py`` (frames as NATS
messages to the other node; the link closes when that node's run is no longer registered, or it
said goodbye at a graceful stop). There the accepting node's shutdown (its connections close 1012)
does not take the object with it: the owner delivers ``websocket_close`` 1006, as when it died.
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, Any

import msgpack

from ..api.websocket import TEXT_ABRUPT_CLOSE
from ..runtime.sockets import CLOSED, HIBERNATABLE, SocketChannel
from .delivery import deliver, release, try_auto_response, unlist

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..runtime.router import Link

__all__ = ["BRIDGED", "install_bridges", "forward_message"]

log = logging.getLogger("duro.websocket")

BRIDGED = "bridged"  # a channel whose socket lives on another worker
_TEXT_RESTART = "The worker process that holds this Durable Object restarted."


class _BridgeTransport:
    """On the owner: the transport of a socket whose connection is on another worker."""

    __slots__ = ("link", "bridge")

    def __init__(self, link: "Link", bridge: int) -> None:
        self.link = link
        self.bridge = bridge

    async def send_text(self, data: str) -> None:
        self._post([self.bridge, "text", data])

    async def send_bytes(self, data: bytes) -> None:
        self._post([self.bridge, "bytes", data])

    async def close(self, code: int, reason: str) -> None:
        self._post([self.bridge, "close", code, reason])

    def _post(self, msg: list[Any]) -> None:
        if not self.link.post("ws.out", msgpack.packb(msg, use_bin_type=True)):
            raise ConnectionError("the worker that holds this WebSocket's connection is gone")


class Bridges:
    """Both sides of every bridge of one worker."""

    def __init__(self, runtime: "Runtime") -> None:
        self.runtime = runtime
        self._ids = itertools.count(1)
        self.owned: dict[tuple[int, int], SocketChannel] = {}  # (id(link), bridge) -> the object's socket
        self.proxies: dict[tuple[int, int], SocketChannel] = {}  # (id(link), bridge) -> our connection's
        self._early: dict[tuple[int, int], list[list[Any]]] = {}  # ws.out before the 101 was read
        self._links: dict[int, "Link"] = {}

    # ------------------------------------------------------------------ the owner's side
    def accept(self, channel: SocketChannel, link: "Link") -> int:
        bridge = next(self._ids)
        key = (id(link), bridge)
        self.owned[key] = channel
        self._watch(link)
        channel.attach(_BridgeTransport(link, bridge))
        return bridge

    def on_in(self, namespace: str, hex_id: str, name: str | None, label: str, payload: bytes,
              link: "Link") -> None:
        msg = msgpack.unpackb(payload, raw=False)
        channel = self.owned.get((id(link), msg[0]))
        if channel is None:
            return  # its socket was dropped already (the object closed it)
        kind = msg[1]
        if kind == "disconnect":
            self.owned.pop((id(link), msg[0]), None)
            message = msg[2]
            if getattr(link, "crosses_nodes", False) and message.get("code") == 1012 and "reason" not in message:
                message = {}  # another node stopping, not this one: to the object the client vanished (1006)
            self.runtime.tasks.spawn(self._disconnect(channel, message), "duro-websocket-bridge")
        elif kind == "text":
            text = msg[2]
            if channel.mode == HIBERNATABLE and try_auto_response(self.runtime, channel, text):
                return
            self._deliver(channel, "websocket_message", text)
        elif kind == "bytes":
            self._deliver(channel, "websocket_message", msg[2])

    def _deliver(self, channel: SocketChannel, kind: str, *args: Any) -> None:
        # In arrival order: each event enters the object's queue before the next frame is read.
        self.runtime.tasks.spawn(deliver(self.runtime, channel, kind, *args), "duro-websocket-bridge")

    async def _disconnect(self, channel: SocketChannel, message: dict[str, Any]) -> None:
        from .websocket import disconnected
        try:
            await disconnected(self.runtime, channel, message)
        finally:
            release(self.runtime, channel)
            await channel.detach()

    # ------------------------------------------------------------------ the connection's side
    def proxy(self, link: "Link", bridge: int) -> SocketChannel:
        channel = SocketChannel()
        channel.mode = BRIDGED
        channel.bridge = (link, bridge)
        key = (id(link), bridge)
        self.proxies[key] = channel
        self._watch(link)
        for msg in self._early.pop(key, ()):
            self._out(channel, msg)
        return channel

    def on_out(self, namespace: str, hex_id: str, name: str | None, label: str, payload: bytes,
               link: "Link") -> None:
        msg = msgpack.unpackb(payload, raw=False)
        key = (id(link), msg[0])
        channel = self.proxies.get(key)
        if channel is None:
            early = self._early.setdefault(key, [])
            if len(early) < 1024:
                early.append(msg)
            return
        self._out(channel, msg)

    @staticmethod
    def _out(channel: SocketChannel, msg: list[Any]) -> None:
        kind = msg[1]
        if kind == "close":
            channel.close(msg[2], msg[3], None)
        else:
            channel.send(msg[2], None)

    def forward(self, channel: SocketChannel, message: dict[str, Any]) -> bool:
        """A message of a bridged connection goes to the object's worker; True at the end."""
        link, bridge = channel.bridge
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            msg = [bridge, "text", text] if text is not None else [bridge, "bytes", message.get("bytes") or b""]
            link.post("ws.in", msgpack.packb(msg, use_bin_type=True))
            return False
        if kind == "websocket.disconnect":
            plain = {k: message[k] for k in ("code", "reason") if k in message}
            link.post("ws.in", msgpack.packb([bridge, "disconnect", plain], use_bin_type=True))
            self.proxies.pop((id(link), bridge), None)
            return True
        return False

    def forget(self, channel: SocketChannel) -> None:
        link, bridge = channel.bridge
        self.proxies.pop((id(link), bridge), None)

    # ------------------------------------------------------------------ a worker died
    def _watch(self, link: "Link") -> None:
        if id(link) in self._links:
            return
        self._links[id(link)] = link
        link.on_close(lambda: self._lost(link))

    def _lost(self, link: "Link") -> None:
        self._links.pop(id(link), None)
        lid = id(link)
        text = getattr(link, "lost_text", _TEXT_RESTART)
        for key in [k for k in self.proxies if k[0] == lid]:
            channel = self.proxies.pop(key)
            if channel.ready_state != CLOSED:
                channel.close(1012, text, None)
        for key in [k for k in self._early if k[0] == lid]:
            del self._early[key]
        owned = [self.owned.pop(k) for k in [k for k in self.owned if k[0] == lid]]
        moved = getattr(link, "moved", False)  # a cluster node's run ended: the objects are elsewhere now
        for channel in owned:
            self.runtime.tasks.spawn(self._vanished(channel, moved), "duro-websocket-bridge")

    async def _vanished(self, channel: SocketChannel, moved: bool = False) -> None:
        """The worker holding the connection died: to the object, the client vanished."""
        try:
            if not channel.close_sent and not moved:
                unlist(self.runtime, channel)
                await deliver(self.runtime, channel, "websocket_close", 1006, TEXT_ABRUPT_CLOSE, False)
        finally:
            release(self.runtime, channel)
            await channel.detach()


def install_bridges(runtime: "Runtime") -> Bridges | None:
    router = runtime.router
    if router is None:
        return None  # one process: nothing to bridge
    bridges = Bridges(runtime)
    router.bridge_accept = bridges.accept
    router.bridge_proxy = bridges.proxy
    router.handle_one_way("ws.in", bridges.on_in)
    router.handle_one_way("ws.out", bridges.on_out)
    runtime.bridges = bridges  # type: ignore[attr-defined]
    return bridges


def forward_message(runtime: "Runtime", channel: SocketChannel, message: dict[str, Any]) -> bool:
    return runtime.bridges.forward(channel, message)  # type: ignore[attr-defined,no-any-return]
