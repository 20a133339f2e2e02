"""Where ``duro objects`` finds things: the data directory, its namespaces, an object from an ID or
a name, and whether a server holds the directory's lock.

Layout (see runtime/catalog.py): ``DATA/do/<unique key>/<64-hex id>.sqlite``; a running server holds
an exclusive flock on ``DATA/duro.lock`` with its pid written in it, and (see http/admin.py) its admin
token in ``DATA/admin.token``. Reading never creates a file or a directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pathlib
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from ..config import ProjectConfig, find_config_file, load_project
from ..errors import DuroError, InvalidInputError
from ..ids import NamespaceKey
from ..storage.migrate import id_key
from ..runtime.journalrecovery import recover
from ..storage import maintenance
from ..storage.journalfile import segment_paths
from ..storage.paths import file_mode, make_dirs_durably, set_file_mode

__all__ = ["Namespace", "Target", "DataContext", "ServerRunning", "UnknownObject", "load_context"]

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class UnknownObject(DuroError):
    """No object matches what was asked for (exit code 3)."""


class ServerRunning(DuroError):
    """A writing command was refused because a server holds the data directory (exit code 4)."""


@dataclass(frozen=True)
class Namespace:
    unique_key: str
    binding: str | None = None
    class_name: str | None = None
    id_key: str | None = None  # the key its IDs were minted with, when a migration moved it

    @property
    def label(self) -> str:
        """How tables show it: the binding when the project names one, else the unique key."""
        return self.binding or self.unique_key

    def key(self) -> NamespaceKey:
        return NamespaceKey(self.unique_key, id_key=self.id_key)


@dataclass(frozen=True)
class Target:
    """One object: its namespace, ID, name (when known) and database path."""

    namespace: Namespace
    id: str
    name: str | None
    path: pathlib.Path

    def describe(self) -> str:
        who = f"{self.name!r} ({self.id[:12]}…)" if self.name is not None else self.id
        return f"object {who} in {self.namespace.label}"


class DataContext:
    """A data directory and the namespaces known from the project's config and from the disk."""

    def __init__(self, data_dir: pathlib.Path, config: ProjectConfig | None) -> None:
        self.data_dir = data_dir
        self.config = config
        found: dict[str, Namespace] = {}
        do = data_dir / "do"
        if config is not None:
            for b in config.bindings:
                uk = config.unique_key(b.class_name)
                found.setdefault(uk, Namespace(uk, b.name, b.class_name, id_key(do / uk)))
        if do.is_dir():
            for child in sorted(do.iterdir()):
                if child.is_dir() and child.name not in found:
                    found[child.name] = Namespace(child.name, id_key=id_key(child))
        self.namespaces = list(found.values())

    # ---- namespaces ------------------------------------------------------------------------------

    def namespace(self, text: str) -> Namespace:
        """The namespace called ``text``: a binding (COUNTER), a class (Counter) or a unique key
        (counter-Counter)."""
        for exact in (True, False):
            hits = [ns for ns in self.namespaces
                    if any(v is not None and (v == text if exact else v.lower() == text.lower())
                           for v in (ns.binding, ns.class_name, ns.unique_key))]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise InvalidInputError(f"namespace {text!r} is ambiguous: it matches "
                                        f"{', '.join(n.unique_key for n in hits)}; pass the unique key")
        known = ", ".join(self._describe_ns(n) for n in self.namespaces) or "none"
        raise InvalidInputError(f"unknown namespace {text!r}; known namespaces: {known}")

    @staticmethod
    def _describe_ns(ns: Namespace) -> str:
        if ns.binding:
            return f"{ns.binding} (class {ns.class_name}, key {ns.unique_key})"
        return ns.unique_key

    def selected(self, namespace: str | None) -> list[Namespace]:
        return [self.namespace(namespace)] if namespace else list(self.namespaces)

    def path(self, ns: Namespace, hex_id: str) -> pathlib.Path:
        return self.data_dir / "do" / ns.unique_key / f"{hex_id}.sqlite"

    # ---- objects ---------------------------------------------------------------------------------

    def objects(self, namespace: str | None = None) -> list[Target]:
        """Every object with a database file, sorted by namespace then ID (names not read)."""
        out = []
        for ns in self.selected(namespace):
            folder = self.data_dir / "do" / ns.unique_key
            if not folder.is_dir():
                continue
            for p in sorted(folder.glob("*.sqlite")):
                if _HEX64.fullmatch(p.stem):
                    out.append(Target(ns, p.stem, None, p))
        return out

    def resolve(self, text: str, namespace: str | None = None) -> Target:
        """An existing object named by a 64-hex ID or by a name. Raises InvalidInputError for an
        ID that belongs to no namespace, or a name found in several; UnknownObject otherwise."""
        spaces = self.selected(namespace)
        if not spaces:
            raise UnknownObject(f"no namespaces in {self.data_dir} (no objects stored yet, and no project "
                                "config found; pass --project DIR)")
        if _HEX64.fullmatch(text):
            hex_id = text.lower()
            owners = [ns for ns in spaces if ns.key().is_valid(hex_id)]
            if not owners:
                where = f"namespace {spaces[0].label}" if namespace else "any namespace here"
                raise InvalidInputError(f"{text} is not an ID of {where}: IDs are minted per namespace "
                                        "(a name is looked up when the argument is not 64 hex digits)")
            ns = owners[0]
            path = self.path(ns, hex_id)
            if not path.is_file():
                raise UnknownObject(f"object {hex_id} in {ns.label} has no stored data "
                                    f"(no file {path}); `duro objects list` shows the stored objects")
            return Target(ns, hex_id, maintenance.summarize(path).name, path)
        hits = []
        for ns in spaces:
            hex_id = ns.key().id_from_name(text).to_string()
            path = self.path(ns, hex_id)
            if path.is_file():
                hits.append(Target(ns, hex_id, text, path))
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise InvalidInputError(f"an object named {text!r} exists in several namespaces "
                                    f"({', '.join(t.namespace.label for t in hits)}); pass --namespace")
        where = f"namespace {spaces[0].label}" if len(spaces) == 1 else \
            f"namespaces {', '.join(n.label for n in spaces)}"
        raise UnknownObject(f"no object named {text!r} in {where} "
                            "(`duro objects list` shows the stored objects; an ID is 64 hex digits)")

    def new_target(self, name: str, namespace: str | None, default: Namespace | None = None) -> Target:
        """Where an object called ``name`` lives (it may not exist yet)."""
        if namespace:
            ns = self.namespace(namespace)
        elif default is not None:
            ns = default
        elif len(self.namespaces) == 1:
            ns = self.namespaces[0]
        elif not self.namespaces:
            raise InvalidInputError(f"no namespace is known for {self.data_dir}: pass --project DIR, the "
                                    "project whose configuration binds the classes")
        else:
            raise InvalidInputError("several namespaces here ("
                                    + ", ".join(n.label for n in self.namespaces) + "); pass --namespace")
        hex_id = ns.key().id_from_name(name).to_string()
        return Target(ns, hex_id, name, self.path(ns, hex_id))

    # ---- the server's lock ----------------------------------------------------------------------

    def server_pid(self) -> str | None:
        """The pid written in ``duro.lock`` if a process holds its lock, else None. Never creates
        the file."""
        try:
            fd = os.open(self.data_dir / "duro.lock", os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def exclusive(self, what: str) -> Iterator[None]:
        """Hold the data directory's lock while changing files offline, so that no server starts
        in the middle; refuse with ServerRunning if a server holds it."""
        pid = self.server_pid()
        if pid is not None:
            raise self.running_error(what, pid)
        make_dirs_durably(self.data_dir)
        fd = os.open(self.data_dir / "duro.lock", os.O_RDWR | os.O_CREAT, file_mode())
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise self.running_error(what, pid) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def recover_journal(self) -> None:
        """After an unclean stop the object files may lag behind the node journal (the durability
        source): bring them in step, as the server does at start, before anything reads or changes
        them offline. Nothing to do when a server holds the directory (it did that itself) or
        there is no journal."""
        if not segment_paths(self.data_dir / "journal") or self.server_pid() is not None:
            return
        with self.exclusive("recover the journal"):
            report = recover(self.data_dir, history=True)
        if report.redone or report.corrupt:
            print(f"recovered from an unclean stop: {report.redone} objects redone from the journal "
                  f"({report.records} records)" + (f"; {len(report.corrupt)} cannot be recovered" if report.corrupt
                                                   else ""), file=sys.stderr)

    def running_error(self, what: str, pid: str) -> ServerRunning:
        return ServerRunning(
            f"cannot {what}: a duro server (pid {pid}) is using {self.data_dir}. Nothing was changed. "
            "Stop the server, or go through it with --server URL (e.g. --server http://127.0.0.1:8787)")


def load_context(project: str | None, data: str | None, *, must_exist: bool = True) -> DataContext:
    """The data directory (``--data``, else the config's data_dir, else PROJECT/.duro) and the
    project's config. Without ``--project``, a folder with no config is fine (namespaces then come
    from the data directory only)."""
    root = pathlib.Path(project or ".")
    config = None
    if project is not None or find_config_file(root) is not None:
        config = load_project(root)
    if data is not None:
        data_dir = pathlib.Path(data)
    elif config is not None and config.data_dir is not None:
        data_dir = config.data_dir
    else:
        data_dir = root / ".duro"
    data_dir = data_dir.absolute()
    if must_exist and not data_dir.is_dir():
        raise InvalidInputError(f"no data directory at {data_dir}: pass --data DIR (the directory given "
                                "to duro serve --data), or run from the project folder")
    if config is not None:
        set_file_mode(config.file_mode)  # files made offline get the mode the server would give them
    ctx = DataContext(data_dir, config)
    ctx.recover_journal()
    return ctx
