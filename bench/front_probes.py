"""Probes of the front's self-protection, for before/after comparisons of one checkout with another.

    python bench/front_probes.py                       # every probe against this checkout
    python bench/front_probes.py --src ../old/src      # against another checkout's duro
    python bench/front_probes.py --only overload headers

Each probe starts `duro serve tests/e2e/projects/front` with the default limits (the project's own
small limits are dropped), sends its traffic to 127.0.0.1 only, prints what the server answered and
its memory, and stops the server. Every probe has a deadline; the whole run stops by itself.

- overload:   wrk, 2,000 connections on one object for 8 s: status counts, Retry-After, log lines
- headers:    one request with 10,000 header lines
- longheader: one header value that never ends (up to 300 MB, 8 s)
- name:       a 10 MB object name (the body of POST /name, used with get_by_name)
- bodies:     20 parallel 99 MB request bodies: answers and peak RSS
- idle:       21,000 idle connections (3 processes), then a durable write
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROJECT = ROOT / "tests" / "e2e" / "projects" / "front"
LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) s200=0 s503=0 s500=0 other=0 ra=0 end
function response(status, headers, body)
  if status == 200 then s200 = s200 + 1
  elseif status == 503 then s503 = s503 + 1; if headers["retry-after"] then ra = ra + 1 end
  elseif status == 500 then s500 = s500 + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local a,b,c,d,e = 0,0,0,0,0
  for _, t in ipairs(threads) do a=a+t:get("s200") b=b+t:get("s503") c=c+t:get("s500") d=d+t:get("other") e=e+t:get("ra") end
  io.write(string.format("200=%d 503=%d (with Retry-After: %d) 500=%d other=%d\\n", a, b, e, c, d))
end
"""


class Server:
    def __init__(self, src: str | None, work: pathlib.Path, port: int) -> None:
        project = work / "project"
        shutil.copytree(PROJECT, project, dirs_exist_ok=True)
        toml = (project / "pyproject.toml").read_text()
        (project / "pyproject.toml").write_text(toml.split("[tool.duro.limits]")[0])  # default limits
        # A write per name: the 10 MB name probe reaches storage as it would in an application.
        app = (project / "app.py").read_text().replace("get_by_name(await request.text()).count()",
                                                       "get_by_name(await request.text()).incr(0)")
        (project / "app.py").write_text(app)
        env = dict(os.environ, PYTHONPATH=src) if src else dict(os.environ)
        self.port = port
        self.log_path = work / "server.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["nice", "-n", "10", sys.executable, "-m", "duro", "serve", str(project), "--port",
                                      str(port), "--data", str(work / "data"), "--workers", "1"], env=env,
                                     stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(0.5)

    def rss_mib(self, field: str = "VmRSS") -> int:
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith(field):
                return int(line.split()[1]) // 1024
        return -1

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def log_summary(self) -> str:
        lines = self.log_path.read_bytes().splitlines()
        return (f"log: {len(lines)} lines, {self.log_path.stat().st_size} bytes, longest {max(map(len, lines))}, "
                f"tracebacks {sum(1 for x in lines if x.startswith(b'Traceback'))}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def request(port: int, raw: bytes, wait: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        try:
            s.sendall(raw)
        except OSError:
            pass  # refused mid-send: the answer may be waiting
        out = b""
        try:
            while True:
                c = s.recv(65536)
                if not c:
                    break
                out += c
        except OSError:
            pass
        return out


def status(out: bytes) -> str:
    m = re.search(rb"HTTP/1.1 (\d+)", out)
    return m.group(1).decode() if m else "no answer"


def probe_overload(srv: Server) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as f:
        f.write(LUA)
        f.flush()
        out = subprocess.run(["nice", "-n", "10", "wrk", "-t2", "-c2000", "-d8s", "-s", f.name,
                              f"http://127.0.0.1:{srv.port}/incr/one/0"], capture_output=True, text=True, timeout=60)
    print("  wrk -t2 -c2000 -d8s /incr/one/0:", out.stdout.strip().splitlines()[-1])
    time.sleep(1)
    print("  overload lines in the log:", srv.log_path.read_bytes().count(b"Durable Object is overloaded"))


def probe_headers(srv: Server) -> None:
    raw = (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
           + b"".join(b"X-%d: 1\r\n" % i for i in range(10_000)) + b"\r\n")
    print("  10,000 header lines ->", status(request(srv.port, raw)))


def probe_longheader(srv: Server) -> None:
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: ")
    sent, t0 = 0, time.monotonic()
    try:
        while sent < 300 * 2**20 and time.monotonic() - t0 < 8:
            s.sendall(b"a" * 65536)
            sent += 65536
    except OSError:
        pass
    try:
        out = s.recv(4096)
    except OSError:
        out = b""
    s.close()
    time.sleep(1)
    print(f"  sent {sent >> 20} MB of one header -> {status(out)}; RSS now {srv.rss_mib()} MiB, "
          f"peak {srv.rss_mib('VmHWM')} MiB")


def probe_name(srv: Server) -> None:
    body = b"n" * (10 * 2**20)
    out = request(srv.port, b"POST /name HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
                  % len(body) + body)
    time.sleep(1)
    log = srv.log_path.read_bytes()
    print(f"  10 MB name -> {status(out)}; RSS now {srv.rss_mib()} MiB, peak {srv.rss_mib('VmHWM')} MiB; "
          f"SQLITE_TOOBIG in log: {b'SQLITE_TOOBIG' in log}; name limit in log: {b'limit of 1024 bytes' in log}")


def probe_bodies(srv: Server) -> None:
    body = b"b" * (99 * 2**20)
    head = b"POST /body HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    with cf.ThreadPoolExecutor(20) as ex:
        answers = list(ex.map(lambda _: status(request(srv.port, head + body, wait=60)), range(20)))
    counts = {a: answers.count(a) for a in sorted(set(answers))}
    print(f"  20 x 99 MB bodies -> {counts}; peak RSS {srv.rss_mib('VmHWM')} MiB")


def probe_idle(srv: Server) -> None:
    code = f"""
import socket, time
conns = []
for i in range(7000):
    try:
        conns.append(socket.create_connection(("127.0.0.1", {srv.port}), timeout=5))
    except OSError:
        break
time.sleep(20)
"""
    holders = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(3)]
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 15 and srv.fds() < 19_990:
            time.sleep(0.5)
        fds = srv.fds()
        out = request(srv.port, b"GET /incr/durable/0 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        body = out.split(b"\r\n\r\n")[-1][:60]
        print(f"  21,000 idle connections: server holds {fds} descriptors; a durable write -> {status(out)} {body!r}")
    finally:
        for h in holders:
            h.kill()
            h.wait()
    time.sleep(1)
    out = request(srv.port, b"GET /count/durable HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    body = out.split(b"\r\n\r\n")[-1]
    print(f"  afterwards the counter reads {body!r}")


PROBES = {"overload": probe_overload, "headers": probe_headers, "longheader": probe_longheader, "name": probe_name,
          "bodies": probe_bodies, "idle": probe_idle}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", help="PYTHONPATH of another checkout's duro (its src folder)")
    ap.add_argument("--only", nargs="*", choices=list(PROBES), default=list(PROBES))
    ap.add_argument("--port", type=int, default=18_870)
    args = ap.parse_args()
    for name in args.only:
        with tempfile.TemporaryDirectory(prefix="duro-probe-") as tmp:
            srv = Server(args.src, pathlib.Path(tmp), args.port)
            print(f"{name}: (start RSS {srv.rss_mib()} MiB)")
            try:
                PROBES[name](srv)
            finally:
                srv.stop()
                print("  " + srv.log_summary())


if __name__ == "__main__":
    main()
