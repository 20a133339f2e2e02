"""A whole cluster on this machine, with one command, to watch cluster mode work:

    python -m duro.cluster.local PROJECT [--nodes 3] [--port 8787]

starts 3 nats-servers (JetStream R=3, ``sync_interval: always``, on free 127.0.0.1 ports) and
``--nodes`` duro nodes (``duro serve PROJECT --cluster ... --node node-<i>`` on ports ``--port``,
``--port + 1``, ..., or any free ones with ``--port 0``; data in a temporary folder), prints their addresses and PIDs, and runs until
Ctrl-C or SIGTERM, then stops every process it started by PID. Needs the test extra (the
nats-server binary). For experiments only: everything runs on one machine.

Never: leave a process running after it returns.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from .testing import NatsServers

__all__ = ["main"]


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: pathlib.Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"a duro node exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"a duro node did not listen on {port} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m duro.cluster.local", description=__doc__.split("\n\n")[0])
    ap.add_argument("project", help="the project folder (pyproject.toml [tool.duro] or a wrangler file)")
    ap.add_argument("--nodes", type=int, default=3, help="duro nodes to start (default 3)")
    ap.add_argument("--port", type=int, default=8787,
                    help="port of the first node, the next ones follow (default 8787); 0: any free ports")
    args = ap.parse_args(argv)
    if not 1 <= args.nodes <= 16:
        print("duro: --nodes must be 1 to 16", file=sys.stderr)
        return 2
    folder = pathlib.Path(tempfile.mkdtemp(prefix="duro-local-cluster-"))

    def _term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    try:
        (folder / "nats").mkdir()
        with NatsServers(3, folder=folder / "nats") as nats:
            nodes: list[subprocess.Popen[bytes]] = []
            try:
                _start_nodes(args, folder, ",".join(nats.urls), nodes, ",".join(nats.monitor_urls))
                while any(p.poll() is None for p in nodes):
                    time.sleep(0.5)
                print("every node has stopped", flush=True)
            except KeyboardInterrupt:
                pass
            finally:
                _stop_nodes(nodes)  # before the nats-servers: a graceful stop hands objects over through them
    except KeyboardInterrupt:
        pass
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def _start_nodes(args: argparse.Namespace, folder: pathlib.Path, urls: str, nodes: list[subprocess.Popen[bytes]],
                 monitor: str) -> None:
    print(f"nats-servers (JetStream R=3, sync_interval: always): {urls}", flush=True)
    for i in range(args.nodes):
        port = args.port + i if args.port else _free_port()
        log = folder / f"node-{i}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "duro", "serve", args.project, "--port", str(port), "--data",
                 str(folder / f"node-{i}"), "--no-admin", "--cluster", urls, "--node", f"node-{i}",
                 "--nats-monitor", monitor],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        nodes.append(proc)
        _wait_listening(port, proc, log)
        print(f"node-{i}: http://127.0.0.1:{port}  pid {proc.pid}  log {log}", flush=True)
    print("ready. Send requests to any node; `kill -9 <pid>` a node and its objects move to the others after "
          "its lease (3 s); `kill <pid>` hands them over at once. Ctrl-C stops everything.", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop_nodes(nodes: list[subprocess.Popen[bytes]]) -> None:
    for p in nodes:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            os.kill(p.pid, signal.SIGTERM)
    for p in nodes:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)

if __name__ == "__main__":
    sys.exit(main())
