"""CPU per request under ``duro serve --workers 2``: an object owned by the worker that holds the
connection (local) against one owned by the other worker (forwarded over the Unix socket).

    python bench/workers.py                 # 3,000 sequential requests of each kind
    python bench/workers.py --requests 10000

One keep-alive connection sends durable SQL increments one after the other; the CPU time of every
process of the server (supervisor and both workers, from /proc/<pid>/schedstat, in nanoseconds)
is read before and after, so a forwarded request is charged for both workers' share. It measures
CPU, not wall time: the machine's noise moves it much less. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import http.client
import pathlib
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
PROJECT = HERE / "workers_project"
sys.path.insert(0, str(HERE.parent / "src"))

from duro.config import load_project  # noqa: E402
from duro.ids import NamespaceKey  # noqa: E402
from duro.runtime.router import owner_of  # noqa: E402
from procs import children, cpu_ns, free_port  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=3000)
    args = ap.parse_args()
    port = free_port()
    data = tempfile.mkdtemp(prefix="bench-workers-")
    proc = subprocess.Popen([sys.executable, "-m", "duro", "serve", str(PROJECT), "--port", str(port), "--data", data,
                             "--workers", "2", "--log-level", "warning"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(children(proc.pid)) < 2:
            if time.monotonic() > deadline:
                raise TimeoutError("the workers did not start")
            time.sleep(0.1)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

        def get(path: str) -> bytes:
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            assert r.status == 200, body
            return body

        while True:  # until the workers answer (the port is bound before they serve)
            try:
                holder = int(get("/entry"))
                break
            except (ConnectionError, http.client.HTTPException):
                time.sleep(0.1)
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        workers = children(proc.pid)
        mine = next(k for k, v in workers.items() if v == holder)
        key = NamespaceKey(load_project(PROJECT).unique_key("Counter"))
        names = {True: [], False: []}
        i = 0
        while min(len(v) for v in names.values()) < 50:
            name = f"n{i}"
            local = owner_of(str(key.id_from_name(name)), 2) == mine
            if len(names[local]) < 50:
                names[local].append(name)
            i += 1
        pids = [proc.pid, *workers.values()]
        print(f"2 workers; the connection is held by worker {mine}; {args.requests} sequential requests each")
        for local in (True, False):
            for n in names[local]:
                get(f"/obj/{n}")  # warm: the objects exist and are open
            t0, c0 = time.perf_counter(), cpu_ns(pids)
            for j in range(args.requests):
                get(f"/obj/{names[local][j % 50]}")
            c1, t1 = cpu_ns(pids), time.perf_counter()
            kind = "local    " if local else "forwarded"
            print(f"{kind}  CPU {(c1 - c0) / args.requests / 1000:7.1f} us/request (all processes)   "
                  f"wall {(t1 - t0) / args.requests * 1e6:7.1f} us/request")
        conn.close()
    finally:
        proc.terminate()
        proc.wait(30)
        import shutil
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
