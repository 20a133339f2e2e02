"""Helpers of the benchmarks that start ``duro serve`` with worker processes: a free port, the
supervisor's workers, and the CPU time of processes (schedstat, in nanoseconds)."""

from __future__ import annotations

import pathlib
import socket

from duro.testing import worker_pids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> dict[int, int]:
    """worker index -> pid of the workers of the supervisor ``pid``."""
    return worker_pids(pid)


def cpu_ns(pids: list[int]) -> int:
    """CPU time of ``pids`` so far, all together (a process gone counts 0)."""
    total = 0
    for p in pids:
        try:
            total += int(pathlib.Path(f"/proc/{p}/schedstat").read_text().split()[0])
        except OSError:
            pass
    return total
