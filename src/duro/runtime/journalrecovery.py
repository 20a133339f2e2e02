"""Recovery of a data directory at start: every object file brought in step with the node journal.

After a crash or a power cut, :func:`recover` redoes every record newer than its object's last
SYNCED marker, removes WAL files that may hold commits the journal never acknowledged, and
deletes the old segments (kept, with their torn tail cut, while an object in them is damaged).
The record format and the redo itself are :mod:`duro.storage.journalfile`'s.

Never: start an object, or change anything after a clean stop (offline reads stay reads).
"""

from __future__ import annotations

import logging
import os
import pathlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from ..storage.journalfile import COMMIT, pending_redo, redo, scan_segments, segment_paths, stray_side_files
from ..errors import StorageError
from ..storage.paths import fsync_dir, make_dirs_durably

log = logging.getLogger("duro.journal")

__all__ = ["RecoveryReport", "recover", "journal_folders", "check_writable"]


@dataclass
class RecoveryReport:
    """What :func:`recover` did."""

    clean: bool = True
    redone: int = 0  # objects whose files were redone
    records: int = 0  # records applied
    stray_removed: int = 0  # WAL/shm files removed
    corrupt: dict[str, str] = field(default_factory=dict)  # key -> why it cannot start
    seconds: float = 0.0
    next_lsn: int = 1
    last: dict[str, int] = field(default_factory=dict)  # key -> lsn of its last record, if segments are kept


def check_writable(folder: pathlib.Path) -> None:
    """Make ``folder`` (a journal's) if needed and check a file can be created in it: a clear
    StorageError if not, before anything is recovered or served."""
    try:
        make_dirs_durably(folder)
        probe = folder / ".probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise StorageError(f"the journal directory {str(folder)!r} is not writable: {e.strerror or e}; "
                           "check its owner and permissions, or choose another --data directory") from e


def journal_folders(data_dir: pathlib.Path) -> list[pathlib.Path]:
    """Every journal folder of a data directory: ``journal/`` (one process) and ``journal/w<k>/``
    (worker ``k`` of ``duro serve --workers N``)."""
    folder = data_dir / "journal"
    try:
        return [folder] + sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("w"))
    except (FileNotFoundError, NotADirectoryError):
        return [folder]


def recover(data_dir: pathlib.Path, *, history: bool, threads: int = 8, folder: pathlib.Path | None = None,
            owns: Callable[[str], bool] | None = None) -> RecoveryReport:
    """Bring every object file in ``data_dir`` in step with the journal in ``folder`` (default
    ``data_dir/journal``; see the module doc). Objects whose records are damaged are left alone
    and listed in ``corrupt``; every other object is redone. Old segments are deleted when no
    object is left corrupt. ``owns`` (a worker of several: which object files, by their hex ID,
    are its own) limits the removal of stray WAL files to this worker's objects: the others are
    open in other processes."""
    t0 = time.perf_counter()
    folder = folder or data_dir / "journal"
    paths = segment_paths(folder)
    report = RecoveryReport()
    if not paths:
        report.seconds = time.perf_counter() - t0
        return report
    scan = scan_segments(paths)
    for what in scan.damage:
        log.error("journal damage: %s", what)
    report.clean = scan.clean
    report.next_lsn = scan.last_lsn + 1
    todo, corrupt = pending_redo(scan)
    report.corrupt = corrupt
    if scan.clean and not todo and not corrupt:
        report.seconds = time.perf_counter() - t0
        return report  # a clean stop: nothing to do (and nothing changed: offline reads stay reads)
    for key, why in corrupt.items():
        log.error("object %s cannot start: %s; its other objects' data is intact. Restore it from a "
                  "bookmark or remove its journal records to start it as of its file", key, why)
    if not scan.clean:
        skip = {str(data_dir / k) for k in corrupt}
        for p in stray_side_files(data_dir):
            if owns is not None and not owns(p.name.split(".", 1)[0]):
                continue
            if str(p).rsplit("-", 1)[0] not in skip:
                p.unlink(missing_ok=True)
                report.stray_removed += 1
    jobs = [(k, recs) for k, recs in todo.items() if k not in corrupt]
    if jobs:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="duro-redo") as pool:
            for _ in pool.map(lambda job: redo(data_dir, job[0], job[1], history=history), jobs):
                pass
    report.redone = len(jobs)
    report.records = sum(len(recs) for _, recs in jobs)
    if corrupt:
        # The segments are kept (nothing new goes in them): the torn tail, never acknowledged, goes.
        if scan.torn_at is not None:
            path, at = scan.torn_at
            log.info("journal: cut the torn tail of %s at byte %d (never acknowledged)", path.name, at)
            with open(path, "r+b") as f:
                f.truncate(at)
                os.fsync(f.fileno())
        for r in scan.records:
            if r.kind == COMMIT:
                report.last[r.key] = r.lsn
    else:
        for p in paths:
            p.unlink(missing_ok=True)
        fsync_dir(folder)
    report.seconds = time.perf_counter() - t0
    return report
