"""The owner's side of calls forwarded from other worker processes (``runtime/router.py``).

A stub on another worker sends ``fetch`` (the encoded ``Request``) or ``rpc`` (the method name and
the encoded arguments); here they run through the object's input gate exactly as a local call
does, and the answer (the encoded ``Response`` or result, or the exception's description) goes
back. The caller rebuilds a failure with its type and Cloudflare's flags, so code cannot tell a
forwarded call from a local one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import codec
from .fetch import Request, Response
from .namespace import BRIDGE_HEADER, describe_exception, fetch_event, rpc_event
from .websocket import server_channel

if TYPE_CHECKING:
    from ..runtime import Activation, Runtime
    from ..runtime.router import Link

__all__ = ["install_forwarding"]


def install_forwarding(runtime: "Runtime") -> None:
    """Let the runtime's router run forwarded calls here (a no-op without worker processes)."""
    router = runtime.router
    if router is None:
        return
    router.describe = describe_exception

    def target(namespace: str, hex_id: str, name: str | None) -> "Activation":
        # Only a worker's own objects come here (the sender hashed the ID the same way). Parsed
        # again here for its jurisdiction, which the ID itself carries.
        object_id = runtime.namespace_key(namespace).id_from_string(hex_id)
        object_id.name = name
        return runtime.activation(namespace, object_id)

    async def fetch(namespace: str, hex_id: str, name: str | None, label: str, payload: bytes,
                    link: "Link") -> bytes:
        request = codec.decode(payload)
        if not isinstance(request, Request):
            raise TypeError("a forwarded fetch carried no Request")
        resp = await target(namespace, hex_id, name).run(fetch_event(request), size=len(request.body), kind="fetch", label=label)
        if not isinstance(resp, Response):
            return codec.encode(resp, rpc=True)  # the caller says what is wrong with it
        channel = server_channel(getattr(resp, "web_socket", None)) if resp.status == 101 else None
        if channel is not None and router.bridge_accept is not None:
            # The socket stays here with its object; the caller's worker (or cluster node) holds the
            # connection and the two are bridged over this link (``http/bridge.py``).
            bridge = router.bridge_accept(channel, link)
            answer = Response(None, status=101, headers=resp.headers.items())
            answer.headers.set(BRIDGE_HEADER, router.bridge_token(bridge))
            return codec.encode(answer, rpc=True)
        if channel is not None:  # pragma: no cover - the front installs the bridges
            raise RuntimeError("a WebSocket accepted for a caller on another process needs the HTTP front")
        return codec.encode(resp, rpc=True)

    async def rpc(namespace: str, hex_id: str, name: str | None, label: str, payload: bytes,
                  link: "Link") -> bytes:
        act = target(namespace, hex_id, name)
        return await act.run(rpc_event(label, payload), size=len(payload), kind="rpc",  # type: ignore[no-any-return]
                             label=label)

    router.handle("fetch", fetch)
    router.handle("rpc", rpc)
