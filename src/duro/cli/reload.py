"""A worker's part in a code reload (SIGHUP to ``duro serve --workers N``; the supervisor's part,
one worker at a time, is in ``workers.py``). Cloudflare's 2026 deploys wait for an object to
hibernate before it runs the new code; a worker that retires does the same for its objects:

1. It stops accepting connections. The listening socket is shared, so the other workers take
   every new one; nothing is refused.
2. It keeps serving — the requests on connections it holds and the calls other workers forward
   for its objects — until nothing holds any of its objects' instances (no event, no lock, no open
   transaction, no ``wait_until`` task): each could hibernate then. The instances are dropped when
   the worker stops, as hibernation or eviction would drop them. An object still busy after
   ``limits.code_update_max_delay`` seconds is reset with Cloudflare's "Durable Object reset
   because its code was updated." (its callers get it).
3. It tells the other workers to send no more calls for its objects (``Router.retire``): the
   calls already on their way are answered, later ones wait for its successor.
4. It shuts down as on SIGTERM: requests in flight get the drain time, WebSockets close with 1012.

The supervisor then starts its successor — the project's code imported again — and moves to the
next worker once that one serves. It never exits the process itself, and never runs unless the
supervisor signalled it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Any

from ..core.lifecycle import DeactivationReason
from ..core.limits import TEXT_CODE_UPDATED
from ..errors import ObjectResetError
from .stopping import INFLIGHT_SHARE

__all__ = ["Retirement", "RELOAD_SIGNAL", "ignore_reload_signal"]

log = logging.getLogger("duro.worker")

RELOAD_SIGNAL = signal.SIGHUP
POLL_S = 0.02


class Retirement:
    """Installed in a worker once it serves (:meth:`install`); :meth:`close` when it stops."""

    def __init__(self, runtime: Any, index: int, *, max_delay: float, drain_timeout: float) -> None:
        self.runtime = runtime
        self.index = index
        self.max_delay = max_delay
        self.drain_timeout = drain_timeout
        self.server: Any = None  # the uvicorn server (``http.serve``'s ``on_server``)
        self._task: asyncio.Task[None] | None = None

    def install(self) -> None:
        asyncio.get_running_loop().add_signal_handler(RELOAD_SIGNAL, self.begin)

    def begin(self) -> None:
        if self._task is None and self.server is not None and not self.server.should_exit:
            self._task = asyncio.ensure_future(self._retire())

    async def close(self) -> None:
        try:
            asyncio.get_running_loop().remove_signal_handler(RELOAD_SIGNAL)
        except (RuntimeError, ValueError):  # pragma: no cover - the loop is closing
            pass
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _retire(self) -> None:
        try:
            await self._hand_over()
        except Exception:  # our bug: the worker must still stop, or the reload would wait for it
            log.exception("worker %d: retiring failed; stopping as on SIGTERM", self.index)
        self.server.should_exit = True

    async def _hand_over(self) -> None:
        started = time.monotonic()
        for listener in list(getattr(self.server, "servers", ())):
            listener.close()  # this process's copy of the shared socket: the others accept
        log.info("worker %d (pid %d) retires for a code reload: accepting no new connections, waiting for "
                 "its objects to go idle (at most %g s, limits.code_update_max_delay)", self.index, os.getpid(),
                 self.max_delay)
        deadline = started + self.max_delay
        busy = self.runtime.busy()
        while busy and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
            busy = self.runtime.busy()
        if busy:
            for act in busy:
                act.reset(ObjectResetError(TEXT_CODE_UPDATED), DeactivationReason.CODE_UPDATED)
            log.warning("worker %d: %d objects were still busy after %g s (limits.code_update_max_delay); "
                        "reset them: %s", self.index, len(busy), self.max_delay, TEXT_CODE_UPDATED)
        idle = time.monotonic() - started
        router = self.runtime.router
        # A call still running for a reset object is answered with the reset at once; otherwise
        # calls get the drain time (the requests this worker holds get it in the shutdown).
        wait = POLL_S * 5 if busy else self.drain_timeout * INFLIGHT_SHARE
        if router is not None and not await router.retire(wait, cut=ObjectResetError(TEXT_CODE_UPDATED)):
            log.warning("worker %d: calls from other workers still running after %g s were answered: %s",
                        self.index, wait, TEXT_CODE_UPDATED)
        log.info("worker %d: objects idle after %.2f s, handed over after %.2f s; stopping", self.index, idle,
                 time.monotonic() - started)


def ignore_reload_signal() -> None:
    """One server process without a supervisor cannot reload its code in place: SIGHUP (whose
    default would end the process) is logged and ignored."""
    def on_hup() -> None:
        log.warning("SIGHUP ignored: a code reload needs worker processes under the supervisor "
                    "(duro serve --workers 2 or more); restart this server to run new code")
    asyncio.get_running_loop().add_signal_handler(RELOAD_SIGNAL, on_hup)
