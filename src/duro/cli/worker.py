"""One worker process of ``duro serve --workers N`` (the supervisor is ``workers.py``).

It accepts on the listening socket the supervisor bound, tells the supervisor once it serves and
then beats from its event loop (a loop that stops beating is stuck in code the CPU limit cannot
stop, and the supervisor kills it), dies with the supervisor, and watches its own memory: past
the limit, every running event fails with Cloudflare's memory-limit error (its object is reset)
and the worker exits so the supervisor starts a fresh one. Writes already acknowledged are durable
(the journal redoes them at the next start); events still queued in this worker fail as after a
crash (their callers get a retryable "Network connection lost.").
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import pathlib
import signal
import socket
import threading
import time

from ..core.limits import TEXT_MEMORY_EXCEEDED
from ..runtime import cpulimit
from ..runtime.router import WorkerSlot

__all__ = ["WorkerProcess"]

log = logging.getLogger("duro.worker")

BEAT_S = 0.25
MEMORY_CHECK_S = 0.05
MEMORY_EXIT_GRACE_S = 0.5  # for the failed events' answers to leave before the worker exits
_PR_SET_PDEATHSIG = 1


class WorkerProcess:
    def __init__(self, slot: WorkerSlot, listen_fd: int, pipe_fd: int, memory_limit: int) -> None:
        self.slot = slot
        self.listen_fd = listen_fd
        self.pipe_fd = pipe_fd
        self.memory_limit = memory_limit
        self._beat: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._die_with_parent()

    @classmethod
    def from_arg(cls, text: str, memory_limit: int) -> "WorkerProcess":
        """``index/count/SOCKETS_DIR/listen_fd/pipe_fd`` (the supervisor's ``--worker-slot``)."""
        head, _, rest = text.partition("/")
        count, _, rest = rest.partition("/")
        rest, _, pipe_fd = rest.rpartition("/")
        sockets, _, listen_fd = rest.rpartition("/")
        slot = WorkerSlot(int(head), int(count), pathlib.Path(sockets))
        return cls(slot, int(listen_fd), int(pipe_fd), memory_limit)

    def _die_with_parent(self) -> None:
        """SIGKILL this worker when the supervisor dies (killed by SIGKILL, say), so no worker
        outlives it holding objects a new server would open."""
        parent = os.getppid()
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - Linux has prctl
            pass
        if os.getppid() != parent:  # it died before the prctl took effect
            os._exit(1)

    def socket(self) -> socket.socket:
        return socket.socket(fileno=self.listen_fd)

    def begin(self) -> None:
        """Beat every ``BEAT_S`` from the event loop, from before the server accepts: a loop that
        stops beating is stuck, whether or not it had started serving."""
        loop = asyncio.get_running_loop()

        def beat() -> None:
            self._send(b".")
            self._beat = loop.call_later(BEAT_S, beat)

        beat()
        if self.memory_limit:
            threading.Thread(target=self._watch_memory, name="duro-memory", daemon=True).start()

    def started(self) -> None:
        """The server accepts: tell the supervisor."""
        self._send(b"R")

    def _send(self, b: bytes) -> None:
        try:
            os.write(self.pipe_fd, b)
        except OSError:
            pass  # the supervisor is gone: the death signal follows

    def _watch_memory(self) -> None:
        from .workers import rss_bytes
        pid = os.getpid()
        while not self._stop.wait(MEMORY_CHECK_S):
            rss = rss_bytes(pid)
            if rss > self.memory_limit:
                log.error("worker %d uses %.0f MiB, past its memory limit of %.0f MiB: its running events fail "
                          "with the memory-limit error and it restarts", self.slot.index, rss / 2**20,
                          self.memory_limit / 2**20)
                cpulimit.fail_running(TEXT_MEMORY_EXCEEDED)
                time.sleep(MEMORY_EXIT_GRACE_S)
                logging.shutdown()
                os._exit(3)

    def close(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.cancel()
        try:
            os.close(self.pipe_fd)
        except OSError:
            pass

