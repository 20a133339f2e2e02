"""A FUSE filesystem that loses what was not synced when the power is cut.

    python -m tests.powercut.lazyfs BACKING MOUNTPOINT

mounts BACKING at MOUNTPOINT. Every operation goes through to BACKING at once (so reads see every
write, as from the page cache), but each change that is not yet on "stable storage" keeps a record
of how to undo it:

* file data: a write or truncate is undone until the file is ``fsync``/``fdatasync``-ed;
* directory entries: a create, mkdir, unlink, rmdir or rename is undone until its parent directory
  is ``fsync``-ed (strict POSIX: syncing a new file does not make its name durable; an unlinked
  file's data is kept aside until the unlink is durable, since a cut brings it back).

Writing ``cut`` (or ``cut tear``: the newest unsynced write of each file then half reaches the
disk) on standard input cuts the power: under the lock that every operation takes, all
undo records are applied newest first, every later operation fails with EIO, and the mount is
taken down. (Reads take no lock: a read under way as the power goes may see the files as the cut
left them; ``POWERCUT_READ_DELAY`` = seconds widens that window.) BACKING then holds exactly what a machine would find after the power came back; a test
starts the program again directly on BACKING. ``cut`` is answered with ``cut N`` (the number of
changes lost) on standard output; ``stats`` with the pending counts; ``full`` makes the disk full
(a write that needs a new block fails with ENOSPC; see ``PowerCutFS.full``) and ``room`` frees it.

Data records are undone through a descriptor the filesystem keeps for each file with unsynced
data, so they reach the file whatever its name is by then; directory records name paths, and
undoing everything newest-first meets every entry where it was then.
"""

from __future__ import annotations

import errno
import faulthandler
import os
import pathlib
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from typing import Any

from mfusepy import FUSE, FuseOSError, Operations

__all__ = ["PowerCutFS", "main"]


class PowerCutFS(Operations):  # type: ignore[misc]
    use_ns = True
    # Not implemented here, so the kernel keeps POSIX and BSD locks itself (SQLite needs them).
    lock = None
    flock = None

    def __init__(self, backing: str | os.PathLike[str]) -> None:
        self.root = pathlib.Path(backing).resolve()
        self.trash = self.root.with_name(self.root.name + ".powercut-trash")
        self.trash.mkdir(exist_ok=True)
        self.mutex = threading.RLock()
        self.powered = True
        self.undo: list[tuple[Any, ...]] = []  # ("data", fd, offset, old) | ("size", fd, n) | directory ops
        self.sized: set[int] = set()  # inodes whose synced size is already recorded since their last sync
        self.fh_ino: dict[int, int] = {}
        self.ino_fd: dict[int, int] = {}
        self.serial = 0
        self.stats = {"writes": 0, "fsyncs": 0, "fsyncdirs": 0}
        self.read_delay = float(os.environ.get("POWERCUT_READ_DELAY", "0"))  # seconds (see read)
        # "full": the disk has no free block. Bytes a file already has can be rewritten; a write or
        # truncate that would need a new block (past the size the file had when the disk filled,
        # or any byte of a file made since) fails with ENOSPC. None: there is room.
        self.full: dict[int, int] | None = None

    # ---- helpers ---------------------------------------------------------------------------------
    def _real(self, path: str) -> str:
        return str(self.root) + path

    def _check_power(self) -> None:
        if not self.powered:
            raise FuseOSError(errno.EIO)

    def _ino_fd(self, ino: int, fh: int) -> int:
        # The fs keeps its own descriptor of every file with unsynced data: undoing through it
        # reaches the file whatever it is called by then (renamed, or unlinked and kept aside).
        fd = self.ino_fd.get(ino)
        if fd is None:
            fd = self.ino_fd[ino] = os.dup(fh)
        return fd

    def _note_size(self, fh: int) -> None:
        ino = self.fh_ino[fh]
        if ino not in self.sized:
            self.sized.add(ino)
            self.undo.append(("size", self._ino_fd(ino, fh), os.fstat(fh).st_size))

    def _note_old(self, fh: int, offset: int, length: int) -> None:
        self._note_size(fh)
        size = os.fstat(fh).st_size
        if offset < size and length > 0:
            old = os.pread(fh, min(length, size - offset), offset)
            self.undo.append(("data", self.ino_fd[self.fh_ino[fh]], offset, old))

    def _parent(self, path: str) -> str:
        return os.path.dirname(path)

    # ---- attributes and directories --------------------------------------------------------------
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        self._check_power()
        try:
            st = os.fstat(fh) if fh is not None else os.lstat(self._real(path))
        except OSError as e:
            raise FuseOSError(e.errno) from None
        d = {k: getattr(st, k) for k in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_ino")}
        d["st_atime"], d["st_mtime"], d["st_ctime"] = st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns
        return d

    def readdir(self, path: str, fh: int) -> list[str]:
        self._check_power()
        return [".", ".."] + os.listdir(self._real(path))

    def access(self, path: str, amode: int) -> int:
        self._check_power()
        if not os.access(self._real(path), amode):
            raise FuseOSError(errno.EACCES)
        return 0

    def statfs(self, path: str) -> dict[str, Any]:
        st = os.statvfs(self._real(path))
        return {k: getattr(st, k) for k in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                                            "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}

    def chmod(self, path: str, mode: int) -> int:
        self._check_power()
        os.chmod(self._real(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        self._check_power()
        os.chown(self._real(path), uid, gid)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        self._check_power()
        os.utime(self._real(path), ns=times)
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        with self.mutex:
            self._check_power()
            real = self._real(path)
            try:
                os.mkdir(real, mode)
            except OSError as e:
                raise FuseOSError(e.errno) from None
            self.undo.append(("mkdir", self._parent(real), real))
            return 0

    def rmdir(self, path: str) -> int:
        with self.mutex:
            self._check_power()
            real = self._real(path)
            mode = os.stat(real).st_mode
            try:
                os.rmdir(real)
            except OSError as e:
                raise FuseOSError(e.errno) from None
            self.undo.append(("rmdir", self._parent(real), real, stat.S_IMODE(mode)))
            return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        with self.mutex:
            self._check_power()
            real = self._real(path).rstrip("/") or "/"
            self.stats["fsyncdirs"] += 1
            keep = []
            for rec in self.undo:
                if rec[0] in ("mkdir", "rmdir", "create", "unlink", "rename") and rec[1] == real:
                    if rec[0] == "unlink":
                        _remove(rec[3])
                    elif rec[0] == "rename" and rec[4] is not None:
                        _remove(rec[4])
                    continue
                keep.append(rec)
            self.undo = keep
            return 0

    def opendir(self, path: str) -> int:
        self._check_power()
        return 0

    # ---- files ------------------------------------------------------------------------------------
    def create(self, path: str, mode: int, fi: Any = None) -> int:
        with self.mutex:
            self._check_power()
            real = self._real(path)
            existed = os.path.exists(real)
            try:
                fh = os.open(real, os.O_RDWR | os.O_CREAT, stat.S_IMODE(mode))
            except OSError as e:
                raise FuseOSError(e.errno) from None
            self.fh_ino[fh] = os.fstat(fh).st_ino
            if not existed:
                self.undo.append(("create", self._parent(real), real))
            return fh

    def open(self, path: str, flags: int) -> int:
        with self.mutex:
            self._check_power()
            try:  # every handle can write: the kernel checks the caller's access mode
                fh = os.open(self._real(path), os.O_RDWR)
            except OSError:
                try:
                    fh = os.open(self._real(path), os.O_RDONLY)
                except OSError as e:
                    raise FuseOSError(e.errno) from None
            self.fh_ino[fh] = os.fstat(fh).st_ino
            if flags & os.O_TRUNC:
                self._truncate_fh(fh, 0)
            return fh

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        # Reads take no lock: one that passed this check as the power went may return the file as
        # the cut left it (shorter, or older bytes). A process cannot tell that from a reader that
        # finds less than was written; the server must never acknowledge on the strength of such a
        # read. ``read_delay`` widens that window, to show it (tests/powercut/test_power_loss.py).
        self._check_power()
        if self.read_delay:
            time.sleep(self.read_delay)
        return os.pread(fh, size, offset)

    def _check_room(self, fh: int, end: int) -> None:
        if self.full is None:
            return
        ino = self.fh_ino[fh]
        if ino not in self.full:
            self.full[ino] = 0  # a file created since the disk filled has no block of its own
        if end > self.full[ino]:
            raise FuseOSError(errno.ENOSPC)

    def fill(self) -> None:
        """The disk is full from now on (every file keeps the blocks it has)."""
        with self.mutex:
            sizes: dict[int, int] = {}
            for dirpath, _, names in os.walk(self.root):
                for n in names:
                    st = os.lstat(os.path.join(dirpath, n))
                    sizes[st.st_ino] = st.st_size
            self.full = sizes

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        with self.mutex:
            self._check_power()
            self._check_room(fh, offset + len(data))
            self._note_old(fh, offset, len(data))
            # What was written, for a torn cut (the newest unsynced write of a file half kept).
            self.undo.append(("wrote", self.ino_fd[self.fh_ino[fh]], offset, bytes(data)))
            self.stats["writes"] += 1
            return os.pwrite(fh, data, offset)

    def _truncate_fh(self, fh: int, length: int) -> None:
        self._check_room(fh, length)
        size = os.fstat(fh).st_size
        self._note_size(fh)
        if length < size:
            self._note_old(fh, length, size - length)
        os.ftruncate(fh, length)

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        with self.mutex:
            self._check_power()
            if fh is not None:
                self._truncate_fh(fh, length)
                return 0
            tmp = os.open(self._real(path), os.O_RDWR)
            try:
                self.fh_ino[tmp] = os.fstat(tmp).st_ino
                self._truncate_fh(tmp, length)
            finally:
                self.fh_ino.pop(tmp, None)
                os.close(tmp)
            return 0

    def fallocate(self, path: str, mode: int, offset: int, length: int, fh: int) -> int:
        raise FuseOSError(errno.EOPNOTSUPP)

    def flush(self, path: str, fh: int) -> int:
        self._check_power()
        return 0

    def release(self, path: str, fh: int) -> int:
        with self.mutex:
            self.fh_ino.pop(fh, None)
            os.close(fh)
            return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        with self.mutex:
            self._check_power()
            self.stats["fsyncs"] += 1
            ino = self.fh_ino[fh]
            os.fdatasync(fh)
            fd = self.ino_fd.pop(ino, None)
            if fd is not None:
                self.undo = [r for r in self.undo if not (r[0] in ("data", "size", "wrote") and r[1] == fd)]
                os.close(fd)
            self.sized.discard(ino)
            return 0

    def unlink(self, path: str) -> int:
        with self.mutex:
            self._check_power()
            real = self._real(path)
            self.serial += 1
            aside = str(self.trash / f"{self.serial}")
            try:
                os.rename(real, aside)  # kept until the unlink is durable: a cut brings it back
            except OSError as e:
                raise FuseOSError(e.errno) from None
            self.undo.append(("unlink", self._parent(real), real, aside))
            return 0

    def rename(self, old: str, new: str) -> int:
        with self.mutex:
            self._check_power()
            src, dst = self._real(old), self._real(new)
            aside = None
            if os.path.lexists(dst) and not os.path.isdir(dst):
                self.serial += 1
                aside = str(self.trash / f"{self.serial}")
                os.rename(dst, aside)
            try:
                os.rename(src, dst)
            except OSError as e:
                if aside is not None:
                    os.rename(aside, dst)
                raise FuseOSError(e.errno) from None
            # Durable when the destination directory is synced (the source entry's removal with it).
            self.undo.append(("rename", self._parent(dst), src, dst, aside))
            return 0

    def link(self, target: str, source: str) -> int:
        raise FuseOSError(errno.EPERM)

    def symlink(self, target: str, source: str) -> int:
        raise FuseOSError(errno.EPERM)

    # ---- the power cut ------------------------------------------------------------------------------
    def cut(self, tear: bool = False) -> int:
        """Cut the power: undo every unsynced change, newest first; later operations fail. With
        ``tear``, the newest unsynced write of each file then half reaches the disk after all (a
        prefix of it, a whole number of 512-byte sectors), as a write cut off mid-way does."""
        with self.mutex:
            self.powered = False
            lost = sum(1 for r in self.undo if r[0] != "wrote")
            torn: dict[int, tuple[Any, ...]] = {}
            for rec in reversed(self.undo):
                if rec[0] == "wrote":
                    torn.setdefault(rec[1], rec)
                else:
                    _undo(rec)
            if tear:
                for _, fd, offset, data in torn.values():
                    keep = (len(data) // 2) // 512 * 512
                    if keep:
                        os.pwrite(fd, data[:keep], offset)
            self.undo.clear()
            for fd in self.ino_fd.values():
                os.close(fd)
            self.ino_fd.clear()
            shutil.rmtree(self.trash, ignore_errors=True)
            return lost

    def pending(self) -> dict[str, int]:
        with self.mutex:
            counts: dict[str, int] = dict(self.stats)
            for rec in self.undo:
                counts["pending_" + rec[0]] = counts.get("pending_" + rec[0], 0) + 1
            return counts


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _undo(rec: tuple[Any, ...]) -> None:
    kind = rec[0]
    if kind == "data":
        os.pwrite(rec[1], rec[3], rec[2])
    elif kind == "size":
        os.ftruncate(rec[1], rec[2])
    elif kind in ("create", "mkdir"):
        _remove(rec[2])
    elif kind == "unlink":
        os.rename(rec[3], rec[2])
    elif kind == "rmdir":
        os.mkdir(rec[2], rec[3])
    elif kind == "rename":
        _, _, src, dst, aside = rec
        os.rename(dst, src)
        if aside is not None:
            os.rename(aside, dst)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # a stuck mount can say where it is
    fs = PowerCutFS(args[0])

    def unmount() -> None:
        # The power is off: detach the mount and end this process at once, whoever still has files
        # open in it (their next operation fails, as on a dead disk).
        subprocess.run(["fusermount3", "-u", "-z", args[1]], stderr=subprocess.DEVNULL, check=False)
        sys.stdout.flush()
        os._exit(0)

    def control() -> None:
        for line in sys.stdin:
            cmd = line.strip()
            if cmd in ("cut", "cut tear"):
                try:
                    print(f"cut {fs.cut(tear=cmd == 'cut tear')}", flush=True)
                except BaseException as e:  # say so: a test waiting for the answer must not hang
                    print(f"error {e!r}", flush=True)
                unmount()
                return
            if cmd == "full":
                fs.fill()
                print("full", flush=True)
                continue
            if cmd == "room":
                fs.full = None
                print("room", flush=True)
                continue
            if cmd == "stats":
                print("stats " + " ".join(f"{k}={v}" for k, v in sorted(fs.pending().items())), flush=True)
        fs.cut()  # stdin closed: the test is gone; cut, so the mount does not outlive it
        unmount()

    threading.Thread(target=control, daemon=True, name="powercut-control").start()
    FUSE(fs, args[1], foreground=True, nothreads=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
