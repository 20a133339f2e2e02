"""Where an object's files live, and making names durable on disk.

Owns the side-file names of an object's database (``.history``, ``.restore``), fsync by path, and
creating directories so that a power cut cannot take them away. It must never open a database.
"""

from __future__ import annotations

import os
import pathlib

__all__ = ["as_path", "history_path", "marker_path", "fsync_dir", "make_dirs_durably"]


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
            d.mkdir()
        except FileExistsError:
            continue
        fsync_dir(d.parent)
