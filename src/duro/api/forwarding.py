"""The owner's side of calls forwarded from other worker processes (``runtime/router.py``).

A stub on another worker sends ``fetch`` (the encoded ``Request``) or ``rpc`` (the method name and
the encoded arguments); here they run through the object's input gate exactly as a local call
does, and the answer (the encoded ``Response`` or result, or the exception's description) goes
back. The caller rebuilds a failure with its type and Cloudflare's flags, so code cannot tell a
forwarded call from a local one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import codec
from ..ids import DurableObjectId
from .fetch import Request, Response
from .namespace import call_handler, describe_exception, rpc_event

if TYPE_CHECKING:
    from ..runtime import Activation, Runtime

__all__ = ["install_forwarding"]


def install_forwarding(runtime: "Runtime") -> None:
    """Let the runtime's router run forwarded calls here (a no-op without worker processes)."""
    router = runtime.router
    if router is None:
        return
    router.describe = describe_exception

    def target(namespace: str, hex_id: str, name: str | None) -> "Activation":
        # Only a worker's own objects come here (the sender hashed the ID the same way); the ID
        # was checked for its namespace where the stub was made.
        return runtime.activation(namespace, DurableObjectId(hex_id, name=name, namespace=namespace))

    async def fetch(namespace: str, hex_id: str, name: str | None, label: str, payload: bytes) -> bytes:
        request = codec.decode(payload)
        if not isinstance(request, Request):
            raise TypeError("a forwarded fetch carried no Request")

        async def event(instance: Any) -> Response:
            return await call_handler(instance, "fetch", request)  # type: ignore[no-any-return]

        resp = await target(namespace, hex_id, name).run(event, size=len(request.body), kind="fetch", label=label)
        if not isinstance(resp, Response):
            return codec.encode(resp, rpc=True)  # the caller says what is wrong with it
        if getattr(resp, "web_socket", None) is not None:
            raise NotImplementedError(
                "a WebSocket accepted by an object that another worker process owns cannot be bridged yet; "
                "run duro serve with --workers 1 for WebSocket objects")
        return codec.encode(resp, rpc=True)

    async def rpc(namespace: str, hex_id: str, name: str | None, label: str, payload: bytes) -> bytes:
        act = target(namespace, hex_id, name)
        return await act.run(rpc_event(label, payload), size=len(payload), kind="rpc",  # type: ignore[no-any-return]
                             label=label)

    router.handle("fetch", fetch)
    router.handle("rpc", rpc)
