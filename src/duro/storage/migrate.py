"""Migrations that move stored data: rename, transfer and delete whole namespaces, once per tag.

A namespace's objects live in ``DATA/do/<unique key>/`` (databases, their histories, pending
restore markers); the node's alarm index (``DATA/alarms.sqlite``) has a row per object with an
alarm, keyed by the namespace. A move is one directory rename plus one alarm-index transaction;
a delete first renames the directory into ``DATA/.deleting/`` (so the namespace is gone at once),
then removes it. IDs stay valid across a rename or transfer: the directory carries the key its
IDs were minted with in a small file (:data:`ID_KEY_FILE`), read by :func:`id_key`.

``DATA/migrations.json`` lists the tags applied, per script, in order. Every step is idempotent, and a tag is
recorded only after all its steps are done, so a process killed in the middle redoes the
migration at the next start and ends in the same state. The node journal must hold no record of
a namespace being moved (recovery at start empties it; a frozen segment of an object that could
not be recovered blocks the move, with a message saying so).

Never: import user code, open an object's database, or run while a server holds the data
directory (the caller holds its lock).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import apsw

from duro.errors import ConfigError, StorageError
from duro.storage.paths import fsync_dir, make_dirs_durably

__all__ = ["Move", "Migration", "Plan", "Change", "ID_KEY_FILE", "STATE_FILE", "id_key", "applied_tags", "pending",
           "dry_run", "apply", "from_config"]

ID_KEY_FILE = ".id-key"
STATE_FILE = "migrations.json"
_TOMBS = ".deleting"

Progress = Callable[[str, int, int], None]  # (what, done, total)


@dataclass(frozen=True)
class Move:
    """One namespace's data moved (``rename``/``transfer``: ``source`` -> ``target``) or deleted."""

    kind: Literal["rename", "transfer", "delete"]
    source: str  # unique key of the namespace whose data moves
    target: str | None = None  # unique key it moves to (None for a delete)
    what: str = ""  # for people: "rename class Old to New"


@dataclass(frozen=True)
class Migration:
    """One tagged entry of the ``migrations`` list. ``where`` names it in messages."""

    tag: str | None
    moves: tuple[Move, ...]
    where: str = ""


@dataclass(frozen=True)
class Plan:
    """A script's migrations in order, and every tag it lists. Tags are kept per script: two
    projects may share a data directory (that is what a transfer between them needs)."""

    script: str
    migrations: tuple[Migration, ...] = ()
    tags: tuple[str, ...] = ()


@dataclass
class Change:
    """What one move does (or, in a dry run, would do) to the stored data."""

    tag: str
    move: Move
    objects: int = 0  # object databases in the source namespace
    bytes: int = 0  # every file of the namespace
    alarms: int = 0  # alarm index rows moved or removed
    done: bool = False  # carried out now (False in a dry run, or when there was nothing to move)
    note: str = ""  # "nothing stored", "already moved (an earlier run was interrupted)"

    def describe(self) -> str:
        size = f"{self.objects} object{'s' if self.objects != 1 else ''}, {self.bytes} bytes"
        if self.move.kind == "delete":
            body = f"delete {self.move.source}: {size}"
        else:
            body = f"{self.move.kind} {self.move.source} -> {self.move.target}: {size}"
        return f"[{self.tag}] {self.move.what or body}" + (f" ({body})" if self.move.what else "") + \
            (f"; {self.note}" if self.note else "")


def from_config(config: object) -> Plan:
    """The migrations of a ``ProjectConfig`` as moves between unique keys, and every tag in order."""
    steps = getattr(config, "migrations", ())
    key = config.unique_key  # type: ignore[attr-defined]
    out: list[Migration] = []
    tags: list[str] = []
    for st in steps:
        if st.tag is not None:
            tags.append(st.tag)
        moves: list[Move] = []
        for src, dst in st.renamed:
            moves.append(Move("rename", key(src), key(dst), f"rename class {src} to {dst}"))
        for src, script, dst in st.transferred:
            moves.append(Move("transfer", f"{script}-{src}", key(dst),
                              f"transfer class {src} of script {script} to {dst}"))
        for cls in st.deleted:
            moves.append(Move("delete", key(cls), None, f"delete class {cls}"))
        out.append(Migration(st.tag, tuple(moves), st.key))
    return Plan(config.name, tuple(out), tuple(tags))  # type: ignore[attr-defined]


# ---- state -------------------------------------------------------------------------------------


def id_key(ns_dir: str | os.PathLike[str]) -> str | None:
    """The key the IDs of the namespace stored in ``ns_dir`` were minted with, when a migration
    moved it there (None: its own unique key)."""
    try:
        text = (pathlib.Path(ns_dir) / ID_KEY_FILE).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return text or None


def _write_atomically(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _load(path: pathlib.Path) -> dict[str, list[dict[str, object]]]:
    """``{script: [{"tag", "ms"}, ...]}`` from the record (empty before the first migration)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        scripts = raw["scripts"]
        for entries in scripts.values():
            for e in entries:
                str(e["tag"])
        return scripts
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise StorageError(f"{path} is not a migrations record duro wrote ({type(e).__name__}: {e}); restore it "
                           "from a backup, or remove it only if no migration was ever applied to this data") from e


def applied_tags(data_dir: str | os.PathLike[str], script: str) -> list[str]:
    """The tags of ``script`` applied to ``data_dir``, in order ([] before the first)."""
    return [str(e["tag"]) for e in _load(pathlib.Path(data_dir) / STATE_FILE).get(script, [])]


def _record(data_dir: pathlib.Path, script: str, tag: str, now_ms: int) -> None:
    path = data_dir / STATE_FILE
    scripts = _load(path)
    scripts.setdefault(script, []).append({"tag": tag, "ms": now_ms})
    _write_atomically(path, json.dumps({"scripts": scripts}, indent=1) + "\n")


def pending(data_dir: str | os.PathLike[str], plan: Plan) -> list[Migration]:
    """The migrations not applied yet, in order. Refuses (ConfigError) a record the config does
    not explain: a tag applied that the config no longer lists, tags out of order, a migration
    inserted before one already applied, and an untagged migration that moves data."""
    migrations, tags = plan.migrations, plan.tags
    done = applied_tags(data_dir, plan.script)
    record = f"{pathlib.Path(data_dir) / STATE_FILE}"
    for t in done:
        if t not in tags:
            raise ConfigError(f"migration tag {t!r} was applied to this data ({record}) but the "
                              f"configuration no longer lists it; migrations are append-only: put it back "
                              f"(tags in the config: {', '.join(tags) or 'none'})", key="migrations")
    if list(tags[:len(done)]) != done:
        first = next(i for i, (a, b) in enumerate(zip(tags, done)) if a != b)
        raise ConfigError(f"migration {tags[first]!r} is listed before {done[first]!r}, which was applied "
                          f"already ({record}: {', '.join(done)}); add new migrations at the end of the list",
                          key="migrations")
    out = []
    for m in migrations:
        if m.tag is None:
            if m.moves:
                raise ConfigError("this migration renames, deletes or transfers classes but has no tag: give it "
                                  "one (duro records the tags it has applied, so that each runs exactly once)",
                                  key=m.where or "migrations")
            continue
        if m.tag not in done:
            out.append(m)
    return out


# ---- looking -----------------------------------------------------------------------------------


def _measure(folder: pathlib.Path) -> tuple[int, int]:
    objects = size = 0
    if not folder.is_dir():
        return 0, 0
    for p in folder.iterdir():
        if p.suffix == ".sqlite":
            objects += 1
        try:
            size += p.stat().st_size
        except FileNotFoundError:
            continue
    return objects, size


def _alarm_rows(data_dir: pathlib.Path, namespace: str) -> int:
    path = data_dir / "alarms.sqlite"
    if not path.exists():
        return 0
    conn = apsw.Connection(f"file:{path}?mode=ro", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    try:
        return int(conn.execute("SELECT count(*) FROM alarms WHERE namespace = ?", (namespace,)).fetchall()[0][0])
    except apsw.Error:
        return 0
    finally:
        conn.close()


def dry_run(data_dir: str | os.PathLike[str], plan: Plan) -> list[Change]:
    """What :func:`apply` would do now, changing nothing (``duro migrate --dry-run``)."""
    data = pathlib.Path(data_dir)
    out = []
    for m in pending(data, plan):
        for mv in m.moves:
            src = data / "do" / mv.source
            objects, size = _measure(src)
            ch = Change(str(m.tag), mv, objects, size, _alarm_rows(data, mv.source))
            if not src.is_dir():
                ch.note = "nothing stored"
            out.append(ch)
    return out


# ---- doing -------------------------------------------------------------------------------------


def _has_objects(folder: pathlib.Path) -> bool:
    return folder.is_dir() and any(p.suffix in (".sqlite", ".history") for p in folder.iterdir())


def _move_alarms(data_dir: pathlib.Path, source: str, target: str | None) -> int:
    """Move (or, with no target, remove) the namespace's rows of the alarm index, durably."""
    path = data_dir / "alarms.sqlite"
    if not path.exists():
        return 0
    try:
        conn = apsw.Connection(str(path))
        try:
            with conn:
                if target is None:
                    conn.execute("DELETE FROM alarms WHERE namespace = ?", (source,))
                else:
                    conn.execute("UPDATE OR REPLACE alarms SET namespace = ? WHERE namespace = ?", (target, source))
                n = conn.changes()
            conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
        finally:
            conn.close()
    except apsw.Error as e:
        raise StorageError(f"moving the alarm index rows of {source} failed: {e}") from e
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return n


def _remove_tree(folder: pathlib.Path, progress: Progress | None, what: str) -> None:
    files = [p for p in folder.rglob("*") if p.is_file()]
    for i, p in enumerate(files):
        p.unlink(missing_ok=True)
        if progress is not None:
            progress(what, i + 1, len(files))
    shutil.rmtree(folder, ignore_errors=True)


def _finish_deletes(data_dir: pathlib.Path, progress: Progress | None) -> None:
    """Remove what an interrupted delete left in ``DATA/.deleting``."""
    tombs = data_dir / _TOMBS
    if not tombs.is_dir():
        return
    for t in sorted(tombs.iterdir()):
        _remove_tree(t, progress, f"deleting {t.name.rsplit('.', 1)[0]}, files")
    fsync_dir(tombs)


def _move(data: pathlib.Path, tag: str, mv: Move, pending_keys: Callable[[str], bool]) -> Change:
    do = data / "do"
    src = do / mv.source
    objects, size = _measure(src)
    ch = Change(tag, mv, objects, size)
    if src.is_dir() and pending_keys(mv.source):
        raise StorageError(f"cannot {mv.what or mv.kind}: the node journal still holds records of objects in "
                           f"{mv.source} that could not be recovered (see the log at start); restore or "
                           f"remove those objects first. Nothing was moved")
    if mv.kind == "delete":
        if src.is_dir():
            tombs = data / _TOMBS
            make_dirs_durably(tombs)
            tomb = tombs / f"{mv.source}.{time.time_ns()}"
            os.rename(src, tomb)  # the namespace is gone at once; its files go below
            fsync_dir(do)
            fsync_dir(tombs)
            ch.done = True
        else:
            ch.note = "nothing stored"
        ch.alarms = _move_alarms(data, mv.source, None)
        return ch
    assert mv.target is not None
    dst = do / mv.target
    if src.is_dir():
        if _has_objects(dst):
            n, _ = _measure(dst)
            raise ConfigError(f"cannot {mv.what or mv.kind}: {mv.target} already has stored objects ({n} in {dst}) "
                              f"and so has {mv.source} ({objects}); the target of a rename or transfer must "
                              f"hold no data. Move its objects away (duro objects export, then remove {dst}) "
                              f"and start again. Nothing was moved")
        if dst.is_dir():
            shutil.rmtree(dst)  # empty: nothing of it is lost
        # The directory carries the key its IDs were minted with: the IDs stay valid.
        if id_key(src) is None:
            _write_atomically(src / ID_KEY_FILE, mv.source + "\n")
        make_dirs_durably(do)
        os.rename(src, dst)
        fsync_dir(do)
        ch.done = True
    elif dst.is_dir() and id_key(dst) is not None:
        ch.note = "already moved (an earlier run was interrupted)"
    else:
        ch.note = "nothing stored"
    ch.alarms = _move_alarms(data, mv.source, mv.target)
    return ch


def apply(data_dir: str | os.PathLike[str], plan: Plan, *,
          pending_keys: Iterable[str] = (), progress: Progress | None = None,
          now_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> list[Change]:
    """Carry out the migrations not applied yet, in order; record each tag once its moves are done.
    ``pending_keys``: the node journal's keys (``do/<ns>/<id>.sqlite``) it still holds records of.
    Returns what was done. The caller holds the data directory's lock."""
    data = pathlib.Path(data_dir)
    blocked = {k.split("/")[1] for k in pending_keys if k.count("/") == 2}
    todo = pending(data, plan)
    _finish_deletes(data, progress)
    changes: list[Change] = []
    for m in todo:
        assert m.tag is not None
        for i, mv in enumerate(m.moves):
            changes.append(_move(data, m.tag, mv, blocked.__contains__))
            if progress is not None:
                progress(f"migration {m.tag}", i + 1, len(m.moves))
        _finish_deletes(data, progress)
        _record(data, plan.script, m.tag, now_ms())
    return changes
