"""The ``workers`` module as Cloudflare's Python Workers SDK spells it, backed by duro.

``from workers import DurableObject, WorkerEntrypoint, Request, Response, fetch`` works unchanged
when duro runs a project.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from typing import Any

from ..api import DurableObject, FetchResponse, Request, Response, WorkerEntrypoint
from ..api.fetch import Headers
from ..runtime import current_activation
from ..runtime.tasks import log_failure

__all__ = ["DurableObject", "WorkerEntrypoint", "WorkflowEntrypoint", "Request", "Response",
           "FetchResponse", "fetch", "handler", "python_to_rpc", "python_from_rpc", "wait_until",
           "waitUntil", "env"]

env: Any = None  # set by the loader to the project's env


class WorkflowEntrypoint:
    """Cloudflare Workflows are not part of duro; subclassing works, running does not."""

    def __init__(self, ctx: Any, env: Any) -> None:
        raise NotImplementedError("Cloudflare Workflows are not supported by duro")


def handler(fn: Any) -> Any:
    """Legacy decorator; a no-op."""
    return fn


def python_to_rpc(value: Any) -> Any:
    return value


def python_from_rpc(value: Any) -> Any:
    return value


_background: set["asyncio.Task[Any]"] = set()  # keeps tasks outside any object referenced


async def _await(awaitable: Any) -> Any:
    return await awaitable


def wait_until(awaitable: Any) -> None:
    """Keep ``awaitable`` (a coroutine, task or future) running after the response; inside an
    object, the object stays in memory until it finishes (like ``ctx.wait_until``)."""
    act = current_activation()
    if act is not None:
        act.spawn(_await(awaitable))
    else:
        task = asyncio.ensure_future(_await(awaitable))
        _background.add(task)
        task.add_done_callback(_background.discard)
        task.add_done_callback(log_failure)


waitUntil = wait_until


def _blocking_fetch(url: str, method: str, headers: list[tuple[str, str]], body: bytes | None,
                    timeout: float) -> tuple[int, list[tuple[str, str]], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - user-requested URL
            return r.status, list(r.headers.items()), r.read()
    except urllib.error.HTTPError as e:
        return e.code, list(e.headers.items()), e.read()


async def fetch(input: "str | Request", method: str | None = None, headers: Any = None, body: Any = None,
                timeout: float = 60.0, **_ignored: Any) -> FetchResponse:
    """Outgoing HTTP request. From inside an object it waits at the output gate first."""
    req = input if isinstance(input, Request) else Request(str(input), method=method, headers=headers, body=body)
    if (req.headers.get("upgrade") or "").lower() == "websocket":
        from ..api.outbound import fetch_websocket
        return await fetch_websocket(req)  # a 101 whose web_socket is to be accept()-ed
    act = current_activation()
    if act is not None:
        await act.output_gate()
    status, h, data = await asyncio.get_running_loop().run_in_executor(
        None, _blocking_fetch, req.url, req.method, req.headers.items(), req.body or None, timeout)
    resp = FetchResponse(data, status=status, headers=Headers(h))
    return resp


_REFUSED = {
    "import_from_javascript": "duro runs no JavaScript modules",
    "Blob": "duro bodies are bytes; pass bytes or str",
    "File": "duro bodies are bytes; pass bytes or str",
    "FormData": "Request.form_data() and FormData are not implemented",
}


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    from ._missing import missing
    raise missing("workers", name, _REFUSED.get(name))
