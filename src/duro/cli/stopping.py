"""SIGTERM ends ``duro serve`` within ``limits.drain_timeout``, however busy its event loop is.

Three steps, from the most graceful:

1. uvicorn's own SIGTERM handler starts the graceful shutdown; requests in flight get the first
   three quarters of the drain time (uvicorn's ``timeout_graceful_shutdown``).
2. Then the CPU limiter stops whatever object code is still running (``cpulimit.interrupt_running``)
   — a handler spinning in Python would otherwise keep the loop from ever shutting down. A timer
   thread does it: Python code that spins still lets other threads take the GIL.
3. C code that never returns to the interpreter (an extension spinning without releasing the GIL)
   lets no Python run at all, in any thread: no signal handler, no timer. For that case a small
   helper process is told of SIGTERM without the GIL — ``faulthandler`` writes the main thread's
   traceback into a pipe from inside the C signal handler — and kills the server with SIGKILL once
   the drain time is over, printing where it was stuck. Acknowledged writes are durable (a SIGKILL
   is a crash duro recovers from at the next start); only killing can stop such code, and
   restarting one worker instead of the whole server is the supervisor's job (issue 11 item 1).

It never touches SIGINT (Ctrl-C keeps uvicorn's handling) and never runs on the loop after
installing itself.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Any

from ..core.limits import TEXT_CPU_SHUTDOWN
from ..runtime import cpulimit

__all__ = ["StopWatch", "INFLIGHT_SHARE"]

log = logging.getLogger("duro.cli")

INFLIGHT_SHARE = 0.75  # of the drain time, for requests in flight; the rest is for closing

# The helper process: waits for a byte (the traceback faulthandler writes on SIGTERM) or for the
# end of the pipe (the server exited); after the drain time, kills the server.
_HELPER = r"""
import os, select, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
pid, fd, drain = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
seen = os.read(fd, 65536)
if not seen:
    sys.exit(0)
deadline = time.monotonic() + drain
while True:
    left = deadline - time.monotonic()
    if left <= 0:
        break
    if select.select([fd], [], [], left)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            sys.exit(0)
        seen += chunk
sys.stderr.write("duro: still not stopped %g s after SIGTERM (limits.drain_timeout): code that never returns to "
                 "Python (a C extension spinning) holds the event loop; killing it (SIGKILL). Acknowledged writes "
                 "are durable. It was at:\n%s\n" % (drain, seen.decode("utf-8", "replace")))
sys.stderr.flush()
os.kill(pid, signal.SIGKILL)
"""


class StopWatch:
    """Installed on a running uvicorn server (:meth:`install`, in the main thread, after uvicorn
    set its signal handlers); :meth:`close` once the server has stopped."""

    def __init__(self, drain_timeout: float) -> None:
        self.drain_timeout = drain_timeout
        self.received = False
        self._done = threading.Event()
        self._helper: subprocess.Popen[bytes] | None = None
        self._pipe: Any = None

    def install(self) -> None:
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: Any) -> None:
            if not self.received:
                self.received = True
                threading.Thread(target=self._interrupt_later, name="duro-drain", daemon=True).start()
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGTERM, on_sigterm)
        r, w = os.pipe()
        try:
            self._helper = subprocess.Popen(
                [sys.executable, "-c", _HELPER, str(os.getpid()), str(r), repr(self.drain_timeout)],
                pass_fds=(r,), stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            os.close(r)
        self._pipe = os.fdopen(w, "w")
        # After signal.signal above: faulthandler's C handler runs first, then chains to Python's.
        faulthandler.register(signal.SIGTERM, file=self._pipe, all_threads=False, chain=True)

    def close(self) -> None:
        self._done.set()
        if self._pipe is None:
            return
        faulthandler.unregister(signal.SIGTERM)
        # unregister put back the handler of install time; the one Python has now (uvicorn restored
        # its own when it stopped) must be the one in force.
        signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGTERM))
        self._pipe.close()  # the helper sees the end of the pipe and exits
        self._pipe = None
        if self._helper is not None:
            try:
                self._helper.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover - it exits on EOF at once
                self._helper.kill()
                self._helper.wait()
            self._helper = None

    def _interrupt_later(self) -> None:
        if not self._done.wait(self.drain_timeout * INFLIGHT_SHARE):
            cpulimit.interrupt_running(TEXT_CPU_SHUTDOWN)
