"""``duro serve --workers N``: a supervisor and N worker processes (DESIGN.md §4, §4a).

The supervisor takes the data directory's lock, brings every object file in step with every
journal (``journal/`` and ``journal/w<k>/``: the worker count may have changed since the last run),
binds the listening socket once, and starts N workers (``duro serve`` itself, told its slot). Each
inherits the socket and accepts on it: a worker that dies loses no connection waiting in the
queue, the others take it. Each owns the objects that rendezvous hashing gives it
(``runtime/router.py``) and forwards calls for the others over Unix sockets.

The supervisor watches each worker through a pipe: ``R`` once it serves, then a heartbeat byte from
its event loop every ``BEAT_S``. It restarts a worker that

- exits or is killed (SIGKILL, a segfault, its memory limit),
- stops beating for longer than its CPU limit plus ``STALL_GRACE_S`` (code that never returns to
  the interpreter holds its loop, so the in-process CPU limit cannot stop it), or
- stays past ``1.25 ×`` its memory limit for ``MEMORY_GRACE_S`` (a worker stops itself at the
  limit; this is the backstop for one that cannot: memory taken in C code that never returns),

and says so in one log line each. A worker that keeps failing right after starting is restarted
after a growing pause (at most ``MAX_BACKOFF_S``). SIGTERM or SIGINT is passed on to every worker;
the supervisor exits once they all have (each ends within its drain timeout).

SIGHUP reloads the project's code, one worker at a time (``cli/reload.py`` has the worker's side):
the supervisor sends the worker SIGHUP, the worker retires (its objects go idle, then it stops),
the supervisor starts its successor and waits until that one serves before it retires the next.
The others serve all along. A SIGHUP during a reload runs another once this one is over.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import pathlib
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..http.admin import TOKEN_ENV, write_token

__all__ = ["run_supervisor", "parse_size", "BEAT_S"]

log = logging.getLogger("duro.supervisor")

BEAT_S = 0.25  # a worker's heartbeat, from its event loop
STALL_GRACE_S = 5.0  # on top of limits.cpu_ms before a silent worker is killed
START_TIMEOUT_S = 60.0  # a worker that does not serve within this is killed and started again
MAX_BACKOFF_S = 5.0
MEMORY_BACKSTOP = 1.25
MEMORY_GRACE_S = 2.0
_PAGE = os.sysconf("SC_PAGE_SIZE")


def parse_size(text: str) -> int:
    """``512M``, ``2G``, ``1.5GiB``, ``800000000`` → bytes. ValueError with what was wrong."""
    t = str(text).strip().lower().replace(" ", "")
    units = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
             "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}
    num = t.rstrip("kmgib")
    unit = t[len(num):]
    try:
        value = float(num)
    except ValueError:
        value = -1
    if unit not in units or value <= 0:
        raise ValueError(f"cannot read {text!r} as a memory size: use a number of bytes or one with a unit, "
                         "such as 512M or 2G")
    size = int(value * units[unit])
    if size < 32 << 20:
        raise ValueError(f"memory limit {text!r} is below 32M: a worker needs more than that to start")
    return size


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    pipe: int = -1
    started_at: float = 0.0
    ready_at: float | None = None
    last_beat: float = 0.0
    failures: int = 0  # failures in a row soon after starting
    restart_at: float | None = None  # a pause before the next start
    reason: str | None = None  # why the supervisor killed it, if it did
    down_since: float | None = None  # when it died (for "served again after ...")
    restarts: int = 0
    over_since: float | None = None  # past the memory backstop since
    retiring: bool = False  # told to retire for a reload; its exit is planned
    retire_started: float = 0.0
    retire_deadline: float = 0.0
    beating: bool = False  # its event loop has beaten at least once


class Supervisor:
    def __init__(self, argv: list[str], count: int, data_dir: pathlib.Path, listen: socket.socket, *,
                 cpu_ms: int, memory_limit: int, drain_timeout: float, max_delay: float = 300.0) -> None:
        self.argv = argv
        self.count = count
        self.data_dir = data_dir
        self.listen = listen
        self.cpu_ms = cpu_ms
        self.memory_limit = memory_limit
        self.drain_timeout = drain_timeout
        self.max_delay = max_delay  # limits.code_update_max_delay
        self.reload_pending = False  # SIGHUP received
        self.reload_queue: list[int] = []  # workers still to retire in this reload
        self.reload_started = 0.0
        self.retiring: int | None = None  # the worker retiring (or whose successor starts)
        self.sockets = pathlib.Path(tempfile.mkdtemp(prefix="duro-workers-"))
        self.env = dict(os.environ)  # the workers' (with the admin token, set by run_supervisor)
        self.workers = [_Worker(i) for i in range(count)]
        self.selector = selectors.DefaultSelector()
        self.stopping: int | None = None  # the signal that stops it
        self.exit_code = 0
        self.stop_deadline = 0.0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)

    # ------------------------------------------------------------------ workers
    def _start(self, w: _Worker) -> None:
        r, wfd = os.pipe()
        cmd = [sys.executable, "-m", "duro", *self.argv, "--worker-slot",
               f"{w.index}/{self.count}/{self.sockets}/{self.listen.fileno()}/{wfd}"]
        try:
            w.proc = subprocess.Popen(cmd, pass_fds=(self.listen.fileno(), wfd), stdin=subprocess.DEVNULL,
                                      env=self.env)
        finally:
            os.close(wfd)
        os.set_blocking(r, False)
        w.pipe = r
        w.started_at = w.last_beat = time.monotonic()
        w.ready_at = None
        w.beating = False
        w.reason = None
        w.restart_at = None
        w.over_since = None
        self.selector.register(r, selectors.EVENT_READ, w)

    def _on_pipe(self, w: _Worker) -> None:
        try:
            data = os.read(w.pipe, 4096)
        except BlockingIOError:
            return
        now = time.monotonic()
        if not data:
            self.selector.unregister(w.pipe)
            os.close(w.pipe)
            w.pipe = -1
            return
        w.last_beat = now
        w.beating = True
        if b"R" in data and w.ready_at is None:
            w.ready_at = now
            if self.retiring == w.index and not w.retiring:
                self.retiring = None
                log.info("reload: worker %d (pid %d) serves the new code, %.2f s after the reload began", w.index,
                         w.proc.pid, now - self.reload_started)
                w.down_since = None
                if not self.reload_queue:
                    log.info("reload: done, all %d workers restarted in %.2f s", self.count, now - self.reload_started)
                return
            if w.down_since is not None:
                log.info("worker %d (pid %d) serves again, %.2f s after worker %d stopped", w.index, w.proc.pid,
                         now - w.down_since, w.index)
                w.down_since = None
            else:
                log.info("worker %d (pid %d) serves (%.2f s to start)", w.index, w.proc.pid, now - w.started_at)

    def _reap(self) -> None:
        for w in self.workers:
            if w.proc is None:
                continue
            code = w.proc.poll()
            if code is None:
                continue
            now = time.monotonic()
            if w.pipe >= 0:
                self.selector.unregister(w.pipe)
                os.close(w.pipe)
                w.pipe = -1
            pid = w.proc.pid
            w.proc = None
            if self.stopping is not None:
                stopped = code == 0 or code == -self.stopping
                log.info("worker %d (pid %d) stopped%s", w.index, pid, "" if stopped else ": " + _describe_exit(code))
                continue
            if w.retiring and code == 0 and w.reason is None:
                w.retiring = False
                w.restart_at = w.down_since = now
                log.info("reload: worker %d (pid %d) retired after %.2f s; starting its successor", w.index, pid,
                         now - w.retire_started)
                continue
            w.retiring = False
            why = w.reason or _describe_exit(code)
            lived = now - w.started_at
            if w.ready_at is None and w.restarts == 0 and w.reason is None:
                # It never served: it will not serve after a restart either. Stop, with its status.
                log.error("worker %d (pid %d) could not start (%s); stopping", w.index, pid, why)
                self.exit_code = code if code > 0 else 1
                self._on_signal(signal.SIGTERM, None)
                continue
            w.failures = w.failures + 1 if lived < 10 else 1
            pause = 0.0 if w.failures <= 1 else min(MAX_BACKOFF_S, 0.25 * 2 ** (w.failures - 2))
            w.down_since = now
            w.restart_at = now + pause
            w.restarts += 1
            log.warning("worker %d (pid %d) %s after %.1f s; restarting it%s", w.index, pid, why, lived,
                        f" in {pause:.2f} s ({w.failures} failures in a row)" if pause else "")

    def _check(self) -> None:
        now = time.monotonic()
        stall = self.cpu_ms / 1000 + STALL_GRACE_S
        for w in self.workers:
            p = w.proc
            if p is None or p.poll() is not None or w.reason is not None:
                continue
            if w.ready_at is None and now - w.started_at > START_TIMEOUT_S:
                self._kill(w, f"did not start serving within {START_TIMEOUT_S:g} s")
                continue
            if w.beating and now - w.last_beat > stall:
                self._kill(w, f"was stuck for {now - w.last_beat:.1f} s (its event loop did not run: code that "
                              f"never returns to Python; limits.cpu_ms is {self.cpu_ms})")
                continue
            if self.memory_limit:
                rss = rss_bytes(p.pid)
                if rss <= self.memory_limit * MEMORY_BACKSTOP:
                    w.over_since = None
                elif w.over_since is None:
                    w.over_since = now
                elif now - w.over_since > MEMORY_GRACE_S:
                    self._kill(w, f"used {rss / 2**20:.0f} MiB for {now - w.over_since:.1f} s, past its memory "
                                  f"limit of {self.memory_limit / 2**20:.0f} MiB")

    def _kill(self, w: _Worker, reason: str) -> None:
        w.reason = f"was killed by the supervisor: it {reason}"
        assert w.proc is not None
        try:
            w.proc.kill()
        except ProcessLookupError:
            pass

    # ------------------------------------------------------------------ reloads
    def _on_reload(self, signum: int, frame: Any) -> None:
        self.reload_pending = True
        try:
            os.write(self._wake_w, b"h")
        except OSError:
            pass

    def _retire_budget(self) -> float:
        return self.max_delay + self.drain_timeout * 2 + 10

    def _roll(self) -> None:
        """Move a reload on: retire the next worker once the previous one's successor serves."""
        now = time.monotonic()
        if self.retiring is not None:
            w = self.workers[self.retiring]
            if w.retiring and w.proc is not None and w.reason is None and now > w.retire_deadline:
                self._kill(w, f"did not retire within {self._retire_budget():g} s")
            return
        if not self.reload_queue:
            if not self.reload_pending:
                return
            self.reload_pending = False
            self.reload_queue = list(range(self.count))
            self.reload_started = now
            log.info("reload: restarting %d workers one at a time (each waits for its objects to go idle, "
                     "at most %g s)", self.count, self.max_delay)
        w = self.workers[self.reload_queue[0]]
        if w.proc is None or w.ready_at is None:
            return  # starting (or restarting after a failure): retire it once it serves
        self.reload_queue.pop(0)
        self.retiring = w.index
        w.retiring = True
        w.retire_started = now
        w.retire_deadline = now + self._retire_budget()
        log.info("reload: worker %d (pid %d) retires", w.index, w.proc.pid)
        try:
            w.proc.send_signal(signal.SIGHUP)
        except ProcessLookupError:
            pass

    # ------------------------------------------------------------------ the loop
    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stopping is None:
            self.stopping = signum
            self.stop_deadline = time.monotonic() + self.drain_timeout + 5
            # No worker will be started again: let go of the listening socket, so that once the
            # workers have closed theirs a new connection is refused rather than left in the backlog.
            self.listen.close()
        try:
            os.write(self._wake_w, b"s")
        except OSError:
            pass
        for w in self.workers:
            if w.proc is not None and w.proc.poll() is None:
                try:
                    w.proc.send_signal(signum)
                except ProcessLookupError:
                    pass

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_reload)
        try:
            # Worker 0 first: a project that cannot start (an import error, a bad config, a data
            # directory it cannot use) fails once, with its one error, and the server exits.
            self._start(self.workers[0])
            launched = False
            while True:
                if not launched and self.workers[0].ready_at is not None:
                    launched = True
                    if self.stopping is None:  # a stop during worker 0's start: the others never start
                        for w in self.workers[1:]:
                            self._start(w)
                self._reap()
                if self.stopping is not None:
                    if all(w.proc is None for w in self.workers):
                        break
                    if time.monotonic() > self.stop_deadline:
                        for w in self.workers:
                            if w.proc is not None:
                                log.error("worker %d (pid %d) did not stop within its drain time; killing it",
                                          w.index, w.proc.pid)
                                w.proc.kill()
                else:
                    now = time.monotonic()
                    for w in self.workers:
                        if w.proc is None and w.restart_at is not None and now >= w.restart_at:
                            self._start(w)
                    self._check()
                    self._roll()
                for key, _ in self.selector.select(timeout=0.05):
                    if key.data is None:
                        try:
                            os.read(self._wake_r, 64)
                        except BlockingIOError:
                            pass
                    else:
                        self._on_pipe(key.data)
        finally:
            for w in self.workers:
                if w.proc is not None and w.proc.poll() is None:
                    w.proc.kill()
                    w.proc.wait()
            shutil.rmtree(self.sockets, ignore_errors=True)
        log.info("all workers stopped")
        return self.exit_code


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with status {code}"


def lock_data_dir(data_dir: pathlib.Path, wait: float = 5.0) -> int:
    """The data directory's exclusive lock, for the supervisor and all its workers. A server that
    was just killed may still be releasing it: wait up to ``wait`` seconds."""
    from ..storage.paths import make_dirs_durably
    make_dirs_durably(data_dir)
    fd = os.open(data_dir / "duro.lock", os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise ConfigError(f"data directory {data_dir} is in use by another duro process (pid {other}); "
                                  "stop it or choose another --data directory") from None
            time.sleep(0.05)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def recover_all(data_dir: pathlib.Path, history: bool) -> list[str]:
    """Every journal folder redone into the object files, before any worker opens one. Returns
    the keys of the objects whose records could not be redone (damaged)."""
    from ..runtime.journalrecovery import check_writable, journal_folders, recover
    check_writable(data_dir / "journal")
    held: list[str] = []
    for folder in journal_folders(data_dir):
        report = recover(data_dir, history=history, folder=folder)
        if report.redone or not report.clean:
            log.warning("recovered %s in %.2f s: %d objects redone (%d records), %d stray WAL files removed",
                        folder.relative_to(data_dir), report.seconds, report.redone, report.records,
                        report.stray_removed)
        if report.corrupt:
            held += list(report.last)
        elif folder != data_dir / "journal":
            try:
                folder.rmdir()
            except OSError:
                pass
    return held


def bind(host: str, port: int, wait: float = 5.0, *, listen: bool = True) -> socket.socket:
    """The listening socket every worker inherits. The workers of a server killed a moment ago may
    still hold the address while they exit: an address in use is retried for ``wait`` seconds.
    ``listen=False``: bound only, so the port is held but connections are refused until the server
    listens on it (one process binds before it starts the app, so no listener it starts first, the
    admin's on port 0, can be given the same port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + wait
    while True:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            sock.close()
            if e.errno == errno.EADDRINUSE and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            if e.errno == errno.EADDRINUSE:
                raise ConfigError(f"cannot listen on {host}:{port}: the address is in use (another server?); "
                                  "choose another --port") from None
            raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}") from None
        if listen:
            sock.listen(2048)
            sock.set_inheritable(True)
        return sock


def run_supervisor(argv: list[str], count: int, data_dir: pathlib.Path, host: str, port: int, *,
                   cpu_ms: int, memory_limit: int, drain_timeout: float, history: bool,
                   migrations: Any = None, max_delay: float = 300.0) -> int:
    lock = lock_data_dir(data_dir)
    try:
        held = recover_all(data_dir, history)
        if migrations is not None:  # before any worker opens an object or the alarm index
            from ..storage import migrate
            for change in migrate.apply(data_dir, migrations, pending_keys=held):
                log.warning("migration: %s", change.describe())
        listen = bind(host, port)
        log.info("duro supervisor (pid %d): %d workers on http://%s:%d (data: %s%s)", os.getpid(), count, host,
                 listen.getsockname()[1],
                 data_dir, f", memory limit {memory_limit / 2**20:.0f} MiB per worker" if memory_limit else "")
        sup = Supervisor(argv, count, data_dir, listen, cpu_ms=cpu_ms, memory_limit=memory_limit,
                         drain_timeout=drain_timeout, max_delay=max_delay)
        # One admin token for every worker: any of them may answer ``duro objects`` and ``duro tail``.
        token, token_path = write_token(data_dir)
        sup.env[TOKEN_ENV] = token
        try:
            return sup.run()
        finally:
            token_path.unlink(missing_ok=True)
    finally:
        os.close(lock)
