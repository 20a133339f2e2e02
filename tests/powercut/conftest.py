"""The ``powercut`` fixture: a real FUSE mount (tests/powercut/lazyfs.py) that forgets unsynced
changes when the test cuts the power."""

from __future__ import annotations

import ctypes.util
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _fuse_missing() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist"
    if shutil.which("fusermount3") is None or ctypes.util.find_library("fuse3") is None:
        return "FUSE 3 is not installed (apt-get install -y fuse3)"
    return None


class PowerCut:
    """A mounted lazy filesystem: write through ``mount``; ``cut()`` loses what was not synced and
    leaves the surviving files in ``backing``."""

    def __init__(self, base: pathlib.Path, read_delay: float = 0.0) -> None:
        self.read_delay = read_delay  # seconds each read waits after the power check (lazyfs.read)
        self.backing = base / "disk"
        self.mount = base / "mnt"
        self.backing.mkdir()
        self.mount.mkdir()
        self.lost: int | None = None
        self._start()

    def remount(self) -> None:
        """The power is back: mount what the disk kept again, for another round."""
        self.close()
        self._start()

    def _start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.powercut.lazyfs", str(self.backing), str(self.mount)],
            cwd=ROOT, env={**os.environ, "POWERCUT_READ_DELAY": str(self.read_delay)}, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while not os.path.ismount(self.mount):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read()  # type: ignore[union-attr]
                self.close()
                raise RuntimeError(f"the power-cut filesystem did not mount: {err}")
            if time.monotonic() > deadline:
                self.close()
                raise TimeoutError("the power-cut filesystem did not mount within 20 s")
            time.sleep(0.02)

    def _ask(self, cmd: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def stats(self) -> dict[str, int]:
        line = self._ask("stats")
        return {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}

    def fill(self) -> None:
        """The disk is full from now on: writes that need a new block fail with ENOSPC."""
        assert self._ask("full") == "full"

    def make_room(self) -> None:
        """The disk has room again."""
        assert self._ask("room") == "room"

    def cut(self, tear: bool = False) -> int:
        """Cut the power: every unsynced change is undone (with ``tear``, the last unsynced write
        of each file half kept); the mount goes away."""
        answer = self._ask("cut tear" if tear else "cut")
        assert answer.startswith("cut "), answer
        self.lost = int(answer.split()[1])
        self.proc.wait(20)
        return self.lost

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
                self.proc.wait(20)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None and not f.closed:
                f.close()
        if os.path.ismount(self.mount):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mount)], check=False)


def _mount(tmp_path: pathlib.Path, read_delay: float = 0.0):
    missing = _fuse_missing()
    if missing:
        if os.environ.get("CI"):  # .ci/run installs fuse3: there, a missing FUSE is a failure
            pytest.fail(f"the power-cut tests need FUSE: {missing}")
        pytest.skip(missing)
    pc = PowerCut(tmp_path, read_delay)
    try:
        yield pc
    finally:
        pc.close()


@pytest.fixture
def powercut(tmp_path):
    yield from _mount(tmp_path)


@pytest.fixture
def slow_read_powercut(tmp_path):
    """The same filesystem, where every read waits 3 ms after its power check: reads that straddle
    the cut (and see the files as the cut left them) become common."""
    yield from _mount(tmp_path, read_delay=0.003)
