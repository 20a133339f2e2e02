"""Test harness for duro projects (used by duro's own tests, and by users for theirs).

- :class:`ServerProcess` runs ``duro serve`` as a real subprocess on a free 127.0.0.1 port, with
  ``kill()`` (SIGKILL) and ``restart()`` for crash tests.
- :class:`LocalApp` runs a project in-process on the current event loop, optionally on a virtual
  clock, and sends it requests without a socket.
- :mod:`duro.testing.plugin` is the pytest plugin (entry point ``pytest11``) whose ``duro_*``
  fixtures wrap these for users' tests.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from ..api import App, Request, Response
from ..api.fetch import as_fetch_response
from ..clock import Clock
from ..runtime import DurabilityBarrier, RuntimeLimits
from ..storage.durability import Barrier, BarrierStatistics

if TYPE_CHECKING:
    from .websocket import LocalWebSocket

__all__ = ["HeldBarrier", "LocalApp", "ServerProcess", "free_port", "wait_for", "worker_pids"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def worker_pids(supervisor: int) -> dict[int, int]:
    """worker index -> pid of the live (not zombie) workers of the ``duro serve --workers N``
    supervisor ``supervisor``, read from /proc (Linux)."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = pathlib.Path(f"/proc/{entry.name}/stat").read_text()
            args = pathlib.Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) != supervisor or fields[0] == "Z" or b"--worker-slot" not in args:
            continue
        out[int(args[args.index(b"--worker-slot") + 1].split(b"/")[0])] = int(entry.name)
    return out


class ServerProcess:
    """``duro serve PROJECT`` in a subprocess, one process unless ``args`` has ``--workers``. Use as a
    context manager or call start()/stop()."""

    def __init__(self, project: str | os.PathLike[str], data_dir: str | os.PathLike[str], *,
                 port: int | None = None, args: list[str] | None = None, env: dict[str, str] | None = None,
                 log_path: str | os.PathLike[str] | None = None) -> None:
        self.project = str(project)
        self.data_dir = str(data_dir)
        self.port = port or free_port()
        self.args = list(args or [])
        self.env = env
        self.log_path = pathlib.Path(log_path) if log_path else pathlib.Path(self.data_dir).with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        """The admin listener's base URL (from ``DATA/admin.url``; absent with ``--no-admin``)."""
        return (pathlib.Path(self.data_dir) / "admin.url").read_text().strip()

    def workers(self) -> dict[int, int]:
        """worker index -> pid of this server's worker processes (none for one process)."""
        return worker_pids(self.proc.pid) if self.proc is not None else {}

    def admin_headers(self) -> dict[str, str]:
        """The admin token as a request header."""
        token = (pathlib.Path(self.data_dir) / "admin.token").read_text().strip()
        return {"authorization": f"Bearer {token}"}

    def start(self, timeout: float = 30.0) -> "ServerProcess":
        # One process unless the test asks for workers (``duro serve`` itself runs one per core).
        workers = [] if any(a == "--workers" or a.startswith("--workers=") for a in self.args) else ["--workers", "1"]
        cmd = [sys.executable, "-m", "duro", "serve", self.project, "--port", str(self.port),
               "--data", self.data_dir, *workers, *self.args]
        env = dict(os.environ, **(self.env or {}))
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self._log.close()
                self.proc = None
                raise RuntimeError(f"duro serve exited with {code}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"duro serve did not start within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        """Graceful stop (SIGTERM), then SIGKILL if it does not exit in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self._log.close()
            self.proc = None

    def restart(self) -> "ServerProcess":
        self.stop()
        return self.start()

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class LocalApp:
    """A project running in-process: ``async with LocalApp(dir, data) as app: await app.fetch("/x")``."""

    def __init__(self, project: str | os.PathLike[str], data_dir: str | os.PathLike[str], *,
                 clock: Clock | None = None, durability: str | None = None,
                 limits: RuntimeLimits | None = None) -> None:
        from ..compat import load_app
        self.app: App = load_app(project, data_dir=data_dir, clock=clock, durability=durability, limits=limits)
        self.env = self.app.env
        self.runtime = self.app.runtime

    async def __aenter__(self) -> "LocalApp":
        await self.app.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.app.close()

    async def advance(self, seconds: float) -> None:
        """Move a virtual clock forward (``LocalApp(..., clock=VirtualClock())``) and wait until every
        alarm that came due has run, including retries that fall inside the step."""
        clock = self.runtime.clock
        if not hasattr(clock, "advance"):
            raise TypeError("advance() needs a virtual clock: LocalApp(project, data, clock=VirtualClock())")
        alarms = self.runtime.alarms
        await alarms.wait_idle()
        target = clock.now() + seconds
        while True:
            nxt = alarms.table.next_due()
            if nxt is None or nxt / 1000 > target:
                break
            await clock.advance(max(0.0, nxt / 1000 - clock.now()))
            await alarms.wait_idle()
        await clock.advance(max(0.0, target - clock.now()))
        await alarms.wait_idle()

    async def fetch(self, path: str, method: str = "GET", body: Any = None, headers: Any = None) -> Response:
        url = path if "://" in path else f"http://localhost{path}"
        return as_fetch_response(await self.app.handle(Request(url, method=method, body=body, headers=headers)))

    async def websocket(self, path: str, headers: list[tuple[str, str]] | None = None) -> "LocalWebSocket":
        """Open an in-process WebSocket to ``path`` through the real front (see
        :mod:`duro.testing.websocket`)."""
        from ..http import AsgiFront
        from ..http.websocket import websocket_handler
        from .websocket import LocalWebSocket
        front = getattr(self, "_front", None)
        if front is None:
            front = self._front = AsgiFront(self.app, websocket_handler=websocket_handler)
        return await LocalWebSocket(front, path, headers).connect()


class HeldBarrier:
    """A durability barrier whose futures the test settles by hand, to see what waits for them:
    ``app.runtime.barrier = HeldBarrier()``, act, check nothing left, then ``release_all()`` (or
    ``held[-1].set_exception(StorageError(...))`` to simulate a failed fsync).

    It wraps a real barrier (``inner``, by default ``DurabilityBarrier("os")``): every submit goes
    to it as well, and the future handed out (appended to ``held``) settles once the test has
    released it *and* the inner barrier's own future has settled, with the inner failure if there
    was one. So a ``HeldBarrier`` keeps the :class:`~duro.storage.durability.Barrier` contract
    (``tests/conformance/``), only later. ``close()`` releases whatever is still held.
    """

    def __init__(self, inner: Barrier | None = None) -> None:
        self.inner: Barrier = inner if inner is not None else DurabilityBarrier("os")
        self.held: list[asyncio.Future[None]] = []
        self._inner: list[asyncio.Future[None] | None] = []  # the inner future of each held one
        self._released = 0  # held[:_released] have been released
        self._closed = False
        self._holding: asyncio.Event | None = None  # set while something is held and not released

    @property
    def mode(self) -> str:
        return self.inner.mode

    def start(self) -> None:
        self.inner.start()

    def submit(self, path: str, *, sync_dir: bool = False) -> asyncio.Future[None]:
        if self._closed:
            raise RuntimeError("durability barrier is closed")
        return self._hold(self.inner.submit(path, sync_dir=sync_dir))

    def append(self, key: str, capture: Any) -> asyncio.Future[None]:
        """A journal record (:class:`~duro.runtime.nodejournal.NodeJournal`): held like a submit;
        it goes to the inner barrier too when that is a journal."""
        if self._closed:
            raise RuntimeError("durability barrier is closed")
        inner_append = getattr(self.inner, "append", None)
        return self._hold(inner_append(key, capture) if inner_append is not None else None)

    def _hold(self, inner: "asyncio.Future[None] | None") -> asyncio.Future[None]:
        """A future for the test to release, settling after ``inner`` (the wrapped barrier's)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.held.append(fut)
        self._inner.append(inner)
        self._event().set()
        return fut

    async def wait_held(self) -> None:
        """Wait until some submit is held and not yet released."""
        await self._event().wait()

    def release_all(self) -> None:
        """Let every held future settle (in submit order), each as soon as its inner one has."""
        for i in range(self._released, len(self.held)):
            self._release(self.held[i], self._inner[i])
        self._released = len(self.held)
        if self._holding is not None:
            self._holding.clear()

    async def close(self) -> None:
        self._closed = True
        self.release_all()
        await self.inner.close()  # settles every inner future, so every held one settles now too
        await asyncio.gather(*self.held, return_exceptions=True)

    def statistics(self) -> BarrierStatistics:
        return self.inner.statistics()

    def _event(self) -> asyncio.Event:
        if self._holding is None:
            self._holding = asyncio.Event()
        return self._holding

    @staticmethod
    def _release(fut: "asyncio.Future[None]", inner: "asyncio.Future[None] | None") -> None:
        def settle(done: "asyncio.Future[None] | None") -> None:
            error = done.exception() if done is not None and not done.cancelled() else None
            if fut.done():  # the test settled it by hand
                return
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(None)

        if inner is None or inner.done():
            settle(inner)
        else:
            inner.add_done_callback(settle)
