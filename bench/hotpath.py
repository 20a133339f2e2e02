"""CPU per request on the hot path, in process: the server duro serve runs (uvicorn's httptools
protocol with the front's guard, the ASGI front, the runtime, durability ``fsync`` through the node
journal) on a real 127.0.0.1 socket, and one keep-alive client in the same process sending
``GET /obj/hot`` (the durable SQL UPSERT counter of bench/project) one request at a time.

Seconds are too noisy on a shared machine; count instructions instead. Run it twice under
callgrind with two request counts; the difference divided by the difference of requests is the
instructions per request (start-up and shutdown cancel out):

    valgrind --tool=callgrind --callgrind-out-file=/tmp/hp.%p .venv/bin/python bench/hotpath.py -n 300
    valgrind --tool=callgrind --callgrind-out-file=/tmp/hp.%p .venv/bin/python bench/hotpath.py -n 1300
    (or: python bench/hotpath.py --callgrind 300 1300, which runs both and prints the result)

Without valgrind it prints the microseconds per request (noisy; for a quick look only).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
REQUEST = b"GET /obj/hot HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def drive(n: int, warm: int, hooks: tuple[Any, Any] | None = None) -> float:
    """Serve, send ``warm`` then ``n`` requests, stop; the microseconds per measured request.
    ``hooks``: (start, stop) called around the measured requests (a profiler's)."""
    from duro.cli.serve import tune_gc
    from duro.compat import load_app
    from duro.config import load_project
    from duro.http import AsgiFront, serve
    from duro.http.guard import FrontLimits

    # The CPU limit restores this disposition when the runtime closes; under valgrind a SIGPROF of
    # its timer can arrive after that, and the default disposition would kill the process.
    signal.signal(signal.SIGPROF, signal.SIG_IGN)
    with tempfile.TemporaryDirectory() as d:
        cfg = load_project(HERE / "project")
        app = load_app(cfg.root, data_dir=pathlib.Path(d) / "data", config=cfg)
        front = AsgiFront(app, limits=FrontLimits.from_limits(cfg.limits))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        ready = asyncio.Event()
        tune_gc()
        server = asyncio.ensure_future(serve(front, port=port, log_level="warning", ready=ready))
        await asyncio.wait_for(ready.wait(), 120)
        loop = asyncio.get_running_loop()
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        async def one() -> None:
            await loop.sock_sendall(sock, REQUEST)
            got = b""
            while True:
                chunk = await loop.sock_recv(sock, 4096)
                if not chunk:
                    raise RuntimeError(f"the server closed the connection; got {got!r}")
                got += chunk
                head, sep, body = got.partition(b"\r\n\r\n")
                if sep:
                    m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                    if m is None or len(body) >= int(m.group(1)):
                        break
            if not got.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected response {got!r}")

        for _ in range(warm):
            await one()
        if hooks is not None:
            hooks[0]()
        t0 = time.perf_counter()
        for _ in range(n):
            await one()
        elapsed = time.perf_counter() - t0
        if hooks is not None:
            hooks[1]()
        sock.close()
        os.kill(os.getpid(), signal.SIGINT)  # uvicorn's graceful stop: the lifespan closes the runtime
        await asyncio.wait_for(server, 120)
        return elapsed / n * 1e6 if n else 0.0


def _callgrind_total(n: int, warm: int) -> int:
    with tempfile.TemporaryDirectory() as d:
        out = pathlib.Path(d) / "cg.out"
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p",
                        sys.executable, __file__, "-n", str(n), "--warm", str(warm)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={**os.environ, "PYTHONHASHSEED": "0"})
        total = 0
        for f in pathlib.Path(d).glob("cg.out.*"):
            m = re.search(r"^(?:summary|totals): (\d+)", f.read_text(errors="replace"), re.M)
            if m:
                total += int(m.group(1))
        return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=2000, help="requests measured")
    p.add_argument("--warm", type=int, default=200, help="requests before the measured ones")
    p.add_argument("--callgrind", nargs=2, type=int, metavar=("N1", "N2"),
                   help="run under callgrind with N1 and N2 requests; print instructions per request")
    a = p.parse_args()
    if a.callgrind:
        n1, n2 = a.callgrind
        t1, t2 = _callgrind_total(n1, a.warm), _callgrind_total(n2, a.warm)
        print(f"instructions: {t1} ({n1} requests), {t2} ({n2} requests); "
              f"per request: {(t2 - t1) / (n2 - n1):.0f}")
        return
    try:
        import uvloop
        us = uvloop.run(drive(a.n, a.warm))
    except ImportError:  # pragma: no cover
        us = asyncio.run(drive(a.n, a.warm))
    print(f"{a.n} requests, {us:.1f} us per request (wall clock)")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent / "src"))
    main()
