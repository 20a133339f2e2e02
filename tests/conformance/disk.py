"""Evidence that data reached the disk: :class:`DiskLog` wraps ``os.fdatasync`` and ``os.fsync``
with functions that record which file each call was for and still make the real call (no mock
stands in for the disk). A test can also hold the syncs (``block()``) or make one file's sync fail
as a dying disk would (``fail(path, errno.EIO)``)."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

_REAL_FDATASYNC = os.fdatasync
_REAL_FSYNC = os.fsync


def real(path: os.PathLike[str] | str) -> str:
    """The path as ``/proc/self/fd`` names it (symlinks resolved)."""
    return os.path.realpath(path)


class DiskLog:
    """Which files were fdatasync'd / fsync'd (real paths, in the order the syncs completed)."""

    def __init__(self) -> None:
        self.datasynced: list[str] = []
        self.synced: list[str] = []
        self._failing: dict[str, int] = {}
        self._gate = threading.Event()
        self._gate.set()
        self._entered = threading.Event()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> "DiskLog":
        monkeypatch.setattr(os, "fdatasync", self._fdatasync)
        monkeypatch.setattr(os, "fsync", self._fsync)
        return self

    # -- what the test controls
    def fail(self, path: os.PathLike[str] | str, err: int) -> None:
        """Every later sync of ``path`` raises ``OSError(err)`` instead of syncing."""
        self._failing[real(path)] = err

    def heal(self) -> None:
        self._failing.clear()

    def block(self) -> None:
        """Hold every fdatasync until :meth:`unblock` (the worker threads wait in the call)."""
        self._entered.clear()
        self._gate.clear()

    def unblock(self) -> None:
        self._gate.set()

    async def wait_blocked(self, timeout: float = 10.0) -> None:
        """Wait until an fdatasync is held by :meth:`block`."""
        assert await asyncio.to_thread(self._entered.wait, timeout), f"no fdatasync started within {timeout}s"

    # -- the wrappers (run on the barrier's worker threads)
    def _fdatasync(self, fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        self._entered.set()
        if not self._gate.wait(30):
            raise TimeoutError("the test never unblocked fdatasync")
        self._check(path)
        _REAL_FDATASYNC(fd)
        self.datasynced.append(path)

    def _fsync(self, fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        self._check(path)
        _REAL_FSYNC(fd)
        self.synced.append(path)

    def _check(self, path: str) -> None:
        err = self._failing.get(path)
        if err is not None:
            raise OSError(err, os.strerror(err))
