"""What the node journal costs and saves, measured on a real server (bench/project, 127.0.0.1 only).

    python bench/journal.py                    # every measure below
    python bench/journal.py --objects 10000    # disk at rest for 10,000 objects

- syncs: fdatasync/fsync calls per 1,000 spread commits (1,000 existing objects, one write each),
  counted by ``strace -f -c`` attached to the server (Debian package ``strace``);
- recovery: SIGKILL the server while 1,000 objects each have unsynced commits, start it again and
  read how long the journal's redo took (its log line) and how long until it answered;
- disk: files and bytes per object at rest (after a clean stop) for ``--objects`` small objects;
- descriptors: file descriptors the server holds per open object;
- new: what creating an object costs in system calls, counted by ``strace -f`` on the server while
  ``--new`` objects get their first write: files created (an inode allocated), files removed,
  fdatasync/fsync and every system call, per new object.

``--dir`` puts the data directories somewhere else than the system's temporary folder: on this
project's development machine allocating an inode costs 0.4-1.1 ms of kernel CPU in some folders of
its ext4 and ~30 µs in others, and that alone moves the new-object numbers (docs/performance.md).

Each measure starts its own server on a fresh data directory and stops it; nothing outlives the run.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

HERE = pathlib.Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, data: pathlib.Path, log: pathlib.Path, extra: list[str] | None = None) -> None:
        self.port = free_port()
        self.data = data
        self.log = log
        cmd = [sys.executable, "-m", "duro", "serve", str(HERE / "project"), "--port", str(self.port),
               "--data", str(data), "--log-level", "warning", "--workers", "1", *(extra or [])]
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("server did not start") from None
                time.sleep(0.01)
        self.ready_s = time.perf_counter() - self.t0

    def get(self, path: str) -> bytes:
        return urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30).read()

    def hit(self, paths: list[str], threads: int = 32) -> None:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(self.get, paths))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)


def measure_syncs(tmp: pathlib.Path) -> None:
    if not shutil.which("strace"):
        print("syncs: strace is needed (apt-get install strace)")
        return
    srv = Server(tmp / "syncs", tmp / "syncs.log")
    try:
        objs = [f"/obj/o{i}" for i in range(1, 1001)]
        srv.hit(objs)  # they exist and are open
        out = tmp / "strace.txt"
        st = subprocess.Popen(["strace", "-f", "-c", "-e", "trace=fdatasync,fsync", "-o", str(out),
                               "-p", str(srv.proc.pid)], stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # attached to every thread
        srv.hit(objs)
        time.sleep(0.5)
        st.send_signal(signal.SIGINT)
        st.wait(30)
        calls = {m.group(2): int(m.group(1)) for m in re.finditer(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$",
                                                                     out.read_text(), re.M)}
        print(f"syncs: 1,000 spread commits (32 clients) made {calls.get('fdatasync', 0)} fdatasync and "
              f"{calls.get('fsync', 0)} fsync calls")
    finally:
        srv.stop()


def measure_recovery(tmp: pathlib.Path, n: int) -> None:
    data = tmp / "recovery"
    srv = Server(data, tmp / "rec1.log")
    srv.hit([f"/obj/o{i}" for i in range(1, n + 1)])
    srv.hit([f"/obj/o{i}" for i in range(1, n + 1)])
    srv.kill()  # every object open, its file unsynced: all of it is in the journal only
    srv = Server(data, tmp / "rec2.log")
    try:
        line = next((ln for ln in (tmp / "rec2.log").read_text().splitlines() if "recovered" in ln), "")
        m = re.search(r"in ([\d.]+) s: (\d+) objects redone from the journal \((\d+) records\)", line)
        value = srv.get("/obj/o1").decode()
        if m:
            print(f"recovery: {m.group(2)} objects ({m.group(3)} records) redone in {m.group(1)} s; "
                  f"the server answered {srv.ready_s:.2f} s after it was started; o1 = {value}")
        else:
            print(f"recovery: no redo logged ({line!r}); server answered after {srv.ready_s:.2f} s")
    finally:
        srv.stop()


def measure_disk(tmp: pathlib.Path, n: int) -> None:
    data = tmp / "disk"
    srv = Server(data, tmp / "disk.log")
    tag = os.urandom(3).hex()
    srv.hit([f"/obj/d{tag}-{i}" for i in range(n)])
    srv.stop()
    files = [p for p in (data / "do").rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    alloc = sum(p.stat().st_blocks * 512 for p in files)
    kinds: dict[str, int] = {}
    for p in files:
        kinds[p.suffix or p.name[-4:]] = kinds.get(p.suffix or p.name[-4:], 0) + 1
    journal = sum(p.stat().st_size for p in (data / "journal").glob("*"))
    print(f"disk: {n} small objects at rest: {len(files)} files ({len(files) / n:.2f} per object: {kinds}), "
          f"{size / n / 1024:.1f} KB per object ({alloc / n / 1024:.1f} KB allocated); journal {journal} bytes")


def measure_fds(tmp: pathlib.Path, n: int = 500) -> None:
    srv = Server(tmp / "fds", tmp / "fds.log")
    try:
        before = len(os.listdir(f"/proc/{srv.proc.pid}/fd"))
        srv.hit([f"/obj/f{i}" for i in range(n)])
        busy = len(os.listdir(f"/proc/{srv.proc.pid}/fd"))
        time.sleep(8)  # idle for longer than the catalog's FD_IDLE_SECONDS, and one sweep
        idle = len(os.listdir(f"/proc/{srv.proc.pid}/fd"))
        print(f"descriptors: {(busy - before) / n:.2f} per open object right after its write, "
              f"{(idle - before) / n:.2f} once idle ({n} objects open, /proc/<pid>/fd)")
    finally:
        srv.stop()


_CALL = re.compile(r'^(?:\[pid\s+\d+\]\s+|\d+\s+)?(\w+)\((.*)\)\s+=\s+(-?\d+)')


def count_files(trace: str, existing: set[str]) -> dict[str, int]:
    """Replay an ``strace -f`` log (absolute paths) over the set of files that
    existed before it: files created (a path opened with O_CREAT that did not exist), removed,
    renamed, directories made, and the sync calls."""
    out = dict.fromkeys(("created", "removed", "renamed", "mkdir", "fsync", "fdatasync"), 0)
    pending: dict[str, str] = {}  # pid -> the first half of a call another thread interrupted
    for line in trace.splitlines():
        line = line.strip()
        pid = line.split(" ", 1)[0]
        if line.endswith("<unfinished ...>"):
            pending[pid] = line[:-len("<unfinished ...>")].rstrip()
            continue
        resumed = re.match(r"^\S+\s+<\.\.\. \w+ resumed>(.*)$", line)
        if resumed is not None:
            line = pending.pop(pid, "") + resumed.group(1)
        m = _CALL.match(line)
        if m is None or int(m.group(3)) < 0:
            continue
        call, args = m.group(1), m.group(2)
        paths = re.findall(r'"([^"]*)"', args)
        if call in ("fsync", "fdatasync"):
            out[call] += 1
        elif call in ("openat", "open", "creat") and paths and ("O_CREAT" in args or call == "creat"):
            if paths[0] not in existing:
                existing.add(paths[0])
                out["created"] += 1
        elif call in ("unlink", "unlinkat") and paths:
            existing.discard(paths[0])
            out["removed"] += 1
        elif call.startswith("rename") and len(paths) == 2:
            existing.discard(paths[0])
            existing.add(paths[1])
            out["renamed"] += 1
        elif call.startswith("mkdir"):
            out["mkdir"] += 1
    return out


def _cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid`` so far, every thread."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def measure_new(tmp: pathlib.Path, n: int) -> None:
    if not shutil.which("strace"):
        print("new: strace is needed (apt-get install strace)")
        return
    data = (tmp / "new").absolute()
    srv = Server(data, tmp / "new.log")
    try:
        srv.hit([f"/obj/warm{i}" for i in range(50)])  # the namespace's folder and the journal exist
        time.sleep(0.5)
        # CPU first, untraced: the server's user and kernel time (every thread) per new object.
        tag = os.urandom(3).hex()
        cpu0 = _cpu(srv.proc.pid)
        srv.hit([f"/obj/c{tag}-{i}" for i in range(n)])
        time.sleep(1.0)  # the background work of those creations
        user, system = (b - a for a, b in zip(cpu0, _cpu(srv.proc.pid)))
        print(f"new: {n} new objects: the server used {user / n * 1e3:.2f} ms user and {system / n * 1e3:.2f} ms "
              f"kernel CPU per object (/proc/<pid>/stat, every thread)")
        existing = {str(p) for p in data.rglob("*")}
        out = tmp / "new-strace.txt"
        # One tracer (a thread takes one): -C prints every call and the summary after them.
        st = subprocess.Popen(["strace", "-f", "-C", "-qq", "-o", str(out), "-p", str(srv.proc.pid)],
                              stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # attached to every thread
        tag = os.urandom(3).hex()
        srv.hit([f"/obj/n{tag}-{i}" for i in range(n)])
        time.sleep(1.0)  # the background work of those creations
        st.send_signal(signal.SIGINT)
        st.wait(30)
        text = out.read_text()
        files = count_files(text, existing)
        total = re.search(r"^\s*100\.00\s+[\d.]+\s+\d+\s+(\d+)", text, re.M)
        calls = int(total.group(1)) if total else 0
        per = {k: round(v / n, 2) for k, v in files.items()}
        print(f"new: {n} new objects (32 clients): per object {per['created']} files created, "
              f"{per['removed']} removed, {per['renamed']} renamed, {per['mkdir']} directories made, "
              f"{per['fdatasync']} fdatasync, {per['fsync']} fsync; {calls / n:.0f} system calls "
              f"(strace -f -c, every thread, with the HTTP requests); data in {data.parent}")
    finally:
        srv.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=10_000, help="objects for the disk measure (default 10,000)")
    ap.add_argument("--redo", type=int, default=1000, help="objects to redo in the recovery measure (default 1,000)")
    ap.add_argument("--new", type=int, default=1000, help="objects created in the new measure (default 1,000)")
    ap.add_argument("--only", default="syncs,recovery,disk,fds,new")
    ap.add_argument("--dir", default=None, help="where the data directories go (default: the temporary folder)")
    args = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="duro-journal-bench-", dir=args.dir))
    try:
        for what in args.only.split(","):
            if what == "syncs":
                measure_syncs(tmp)
            elif what == "recovery":
                measure_recovery(tmp, args.redo)
            elif what == "disk":
                measure_disk(tmp, args.objects)
            elif what == "fds":
                measure_fds(tmp)
            elif what == "new":
                measure_new(tmp, args.new)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
