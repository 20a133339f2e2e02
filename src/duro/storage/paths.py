"""Where an object's files live, and making names durable on disk.

Owns the side-file names of an object's database (``.history``, ``.restore``), fsync by path,
creating directories so that a power cut cannot take them away, and the mode of every file and
directory duro creates in a data directory. It must never open a database.

Data files are created 0600 (``file_mode = "0640"`` in the config lets the group read them) and
their directories 0700 (0750): object data is never readable by other local users. The mode is a
process setting, set once by the runtime from the config (:func:`set_file_mode`); the process's
umask can only narrow it. SQLite gives a database's ``-wal`` and ``-shm`` files the database
file's own mode, so a database created through :func:`precreate` has them right too.
"""

from __future__ import annotations

import os
import pathlib

__all__ = ["as_path", "history_path", "marker_path", "fsync_dir", "make_dirs_durably", "set_file_mode",
           "file_mode", "dir_mode", "precreate"]

_ALLOWED_MODES = (0o600, 0o640)
_file_mode = 0o600


def set_file_mode(mode: int) -> None:
    """The mode of data files created from now on in this process: 0o600 or 0o640."""
    global _file_mode
    if mode not in _ALLOWED_MODES:
        raise ValueError(f"file mode must be 0o600 or 0o640, not {oct(mode)}")
    _file_mode = mode


def file_mode() -> int:
    return _file_mode


def dir_mode() -> int:
    """0o700, or 0o750 when the group may read the files."""
    return 0o750 if _file_mode & 0o040 else 0o700


def precreate(path: str | os.PathLike[str]) -> None:
    """Create ``path`` empty with the data file mode unless it exists (SQLite opens an empty file
    as a new database; created by SQLite itself it would get 0644)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _file_mode))
    except FileExistsError:
        pass


def as_path(p: str | os.PathLike[str]) -> pathlib.Path:
    """``p`` as a Path; a Path is returned as it is (parsing a path again is not free)."""
    return p if isinstance(p, pathlib.Path) else pathlib.Path(p)


def history_path(db_path: str | os.PathLike[str]) -> pathlib.Path:
    return as_path(db_path).with_suffix(".history")


def marker_path(db_path: str | os.PathLike[str]) -> pathlib.Path:
    """The pending-restore marker ``on_next_session_restore_bookmark`` leaves for the next open."""
    return as_path(db_path).with_suffix(".restore")


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a file or a directory by path (a directory: the entries created in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs_durably(folder: str | os.PathLike[str]) -> None:
    """Create ``folder`` and its missing parents, fsyncing each new entry's parent directory.

    A directory's name is on stable storage only once its parent is synced: without this, a power
    cut soon after start could take away a fresh data directory (or a namespace's directory) with
    every write acknowledged in it. Cheap when the folder exists (one stat)."""
    missing = []
    p = as_path(folder)
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=dir_mode())
        except FileExistsError:
            continue
        fsync_dir(d.parent)
