"""The node journal's background sync pass: object files written, made durable together.

Closes and checkpoints write an object's database file (and its history) without syncing it and
report it here (:meth:`FileSync.written`). A pass every ``SYNC_INTERVAL`` seconds fdatasyncs every
file reported since the last pass, in parallel, fsyncs each of their folders once, then calls
``mark(key, through)`` (the journal's SYNCED marker) for each object whose files all synced: only
then may the journal forget that object's records.

Never: mark an object whose file, history or folder failed to sync (it is retried next pass), or
run two passes at once.
"""

from __future__ import annotations

import logging
import os
import pathlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ..storage.paths import fsync_dir

log = logging.getLogger("duro.journal")

__all__ = ["FileSync", "SYNC_INTERVAL"]

SYNC_INTERVAL = 1.0  # seconds between two passes that sync the object files written meanwhile


class FileSync:
    """The sync pass of one data directory; ``mark(key, through)`` records that ``key``'s files
    hold every record up to ``through`` durably."""

    def __init__(self, data_dir: pathlib.Path, mark: Callable[[str, int], object]) -> None:
        self.data_dir = data_dir
        self._mark = mark
        self._lock = threading.Lock()  # guards _written
        # Object files written (checkpointed or closed) but not yet synced: (key, through lsn).
        self._written: list[tuple[str, int]] = []
        self._pass_lock = threading.Lock()  # one pass at a time
        self._thread: threading.Thread | None = None
        self._wakeup = threading.Event()
        self._closing = False
        self.file_syncs = 0

    def written(self, key: str, through: int) -> None:
        """``key``'s files hold every record up to ``through``, written but not synced (any thread)."""
        with self._lock:
            self._written.append((key, through))

    def start(self) -> None:
        """Run a pass every SYNC_INTERVAL on a thread of its own, until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="duro-journal-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (blocking: a pass in progress finishes first)."""
        self._wakeup.set()
        if self._thread is not None:
            self._closing = True
            self._thread.join()

    def _run(self) -> None:
        while not self._closing:
            self._wakeup.wait(SYNC_INTERVAL)
            self._wakeup.clear()
            if self._closing:
                return
            try:
                self.sync_files()
            except Exception as e:  # the records stay; the next pass retries
                log.warning("syncing object files failed: %s", e)

    def sync_files(self) -> int:
        """One pass: fdatasync every object file (and history) written since the last pass, in
        parallel, fsync each of their folders once, then mark them synced. A file that fails keeps
        its records (retried next pass). Returns how many objects were marked."""
        with self._pass_lock:
            with self._lock:
                todo, self._written = self._written, []
            if not todo:
                return 0
            latest: dict[str, int] = {}
            for key, through in todo:
                latest[key] = max(latest.get(key, 0), through)
            files = []
            for key in latest:
                db = self.data_dir / key
                files += [db, db.with_suffix(".history")]
            folders = {str((self.data_dir / k).parent) for k in latest}
            failed: set[str] = set()

            def sync_one(path: pathlib.Path) -> None:
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    return  # removed (an empty database), or no history: nothing to keep
                except OSError:
                    failed.add(str(path))
                    return
                try:
                    os.fdatasync(fd)
                except OSError:
                    failed.add(str(path))
                finally:
                    os.close(fd)

            def sync_dir(folder: str) -> None:
                try:
                    fsync_dir(folder)
                except FileNotFoundError:
                    pass
                except OSError:
                    failed.add(folder)

            with ThreadPoolExecutor(max_workers=8, thread_name_prefix="duro-file-sync") as pool:
                list(pool.map(sync_one, files))
                list(pool.map(sync_dir, folders))
            self.file_syncs += len(files) + len(folders)
            marked = 0
            retry = []
            for key, through in latest.items():
                db = self.data_dir / key
                if {str(db), str(db.with_suffix(".history")), str(db.parent)} & failed:
                    retry.append((key, through))
                    continue
                self._mark(key, through)
                marked += 1
            if retry:
                log.warning("%d object files could not be synced; retrying in the next pass", len(retry))
                with self._lock:
                    self._written.extend(retry)
            return marked
