"""The duro node processes of one cluster test: ``start`` one ``duro serve --cluster`` node (named
``<prefix><k>``, its own data directory and log under ``tmp_path``); ``stop_all`` stops every one
by PID at the end (SIGCONT first, in case a test stopped one). The fixtures named ``nodes`` of
test_serve_cluster.py, test_ws_cluster.py and test_serve_faults.py are built on it."""

from __future__ import annotations

import os
import pathlib
import signal
from collections.abc import Sequence

from duro.testing import ServerProcess


class Nodes:
    def __init__(self, project: pathlib.Path, tmp_path: pathlib.Path, prefix: str) -> None:
        self.project = project
        self.tmp_path = tmp_path
        self.prefix = prefix
        self.started: list[ServerProcess] = []

    def start(self, urls: Sequence[str], *, call_timeout: float, args: Sequence[str] = (),
              env: dict[str, str] | None = None, monitor: Sequence[str] = ()) -> ServerProcess:
        name = f"{self.prefix}{len(self.started)}"
        p = ServerProcess(self.project, self.tmp_path / f"data-{name}", log_path=self.tmp_path / f"{name}.log",
                          env={"DURO_TEST_NODE": name, "DURO_CLUSTER_CALL_TIMEOUT": str(call_timeout), **(env or {})},
                          args=["--cluster", ",".join(urls), "--node", name,
                                *(["--nats-monitor", ",".join(monitor)] if monitor else []), *args])
        p.name = name  # type: ignore[attr-defined]
        self.started.append(p)
        return p.start()

    def stop_all(self) -> None:
        for p in self.started:
            if p.proc is not None and p.proc.poll() is None:
                os.kill(p.proc.pid, signal.SIGCONT)
            p.stop(timeout=20)
