"""Helpers of the benchmarks that start ``duro serve`` with worker processes: a free port, the
supervisor's workers, and the CPU time of processes (schedstat, in nanoseconds)."""

from __future__ import annotations

import os
import pathlib
import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> dict[int, int]:
    """worker index -> pid of the workers of the supervisor ``pid`` (from /proc)."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = pathlib.Path(f"/proc/{entry.name}/stat").read_text()
            args = pathlib.Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"--worker-slot" in args:
            out[int(args[args.index(b"--worker-slot") + 1].split(b"/")[0])] = int(entry.name)
    return out


def cpu_ns(pids: list[int]) -> int:
    """CPU time of ``pids`` so far, all together (a process gone counts 0)."""
    total = 0
    for p in pids:
        try:
            total += int(pathlib.Path(f"/proc/{p}/schedstat").read_text().split()[0])
        except OSError:
            pass
    return total
