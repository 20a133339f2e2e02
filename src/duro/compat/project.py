"""Loading a project: read its config, put the compatibility modules in place, import its entry
module, and build the :class:`~duro.api.App`.

duro's own dependencies are imported before the project's folder goes on ``sys.path``, so a
project's module named like one of them (a stub ``uvicorn.py``) never replaces the server stack;
the project's own ``import uvicorn`` then gets duro's, and the start-up says so once. A failing
import of the project is one :class:`ProjectImportError`: the project's traceback and a one-line
summary, never a second attempt.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import pathlib
import sys
import traceback
import types

from ..api import App, ObjectClass
from ..api.app import find_entrypoint
from ..api.assets import AssetServer
from ..clock import Clock
from ..config import ProjectConfig, load_project
from ..errors import ConfigError
from ..exports_config import Exports
from ..runtime import Runtime, RuntimeLimits, portal
from ..runtime.router import WorkerSlot
from ..storage import migrate
from . import asgi as _asgi
from . import js as _js
from . import pyodide_ffi as _ffi
from .pyodide_pkg import make_modules
from . import workers as _workers
from . import wsgi as _wsgi

__all__ = ["ProjectImportError", "install_shims", "load_app", "load_module", "preload_dependencies"]

log = logging.getLogger("duro.project")

# Everything duro imports after the project's folder is on sys.path, by top-level name: the server
# stack (uvicorn loads its protocol modules by name when it starts), the storage and codec
# libraries, the dev reloader, and stdlib modules duro imports lazily. A submodule (websockets.
# asyncio.client, say) is found through its package, so the top-level name is what must be loaded.
_DEPENDENCIES = (
    "apsw", "msgpack", "uvloop", "httptools", "h11", "click", "websockets", "watchfiles", "anyio", "uvicorn",
    "uvicorn.config", "uvicorn.server", "uvicorn.logging", "uvicorn.lifespan.on",
    "uvicorn.protocols.http.httptools_impl", "uvicorn.protocols.websockets.websockets_sansio_impl",
    "resource",
)


_PYODIDE_MODULES = make_modules(_ffi)  # made once: `import pyodide` gets the same module every time


class ProjectImportError(ConfigError):
    """Importing the project's entry module raised. ``summary`` is one line
    (``src/entry.py: ZeroDivisionError: division by zero``), ``details`` the project's traceback
    (frames of duro and of the import machinery left out); ``__cause__`` is the original
    exception. Raised by :func:`load_app` at start-up; nothing has run."""

    def __init__(self, path: pathlib.Path, root: pathlib.Path | None, exc: BaseException) -> None:
        try:
            shown = str(path.relative_to(root)) if root else str(path)
        except ValueError:
            shown = str(path)
        self.summary = f"{shown}: {''.join(traceback.format_exception_only(exc)).strip().splitlines()[-1]}"
        self.details = _project_traceback(exc)
        super().__init__(f"cannot import the project's entry module {self.summary}")


def _project_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` from the first frame outside duro and importlib on."""
    duro_dir = str(pathlib.Path(__file__).resolve().parents[1]) + os.sep
    tb = exc.__traceback__
    while tb is not None:
        f = tb.tb_frame.f_code.co_filename
        if not (f.startswith(duro_dir) or f.startswith("<frozen importlib")):
            break
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


def preload_dependencies(project_folder: str | os.PathLike[str] | None = None) -> None:
    """Import duro's dependencies (:data:`_DEPENDENCIES`) with ``project_folder`` (and the current
    folder, when it is the project's) off ``sys.path``, so the project's files cannot stand in for
    them. Idempotent; a dependency that is not installed (uvloop off POSIX) is skipped."""
    folder = os.path.realpath(project_folder) if project_folder is not None else None
    saved = list(sys.path)
    if folder is not None:
        sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != folder]
    try:
        for name in _DEPENDENCIES:
            if name in sys.modules:
                continue
            try:
                importlib.import_module(name)
            except ImportError:
                continue
    finally:
        sys.path[:] = saved


_reported: set[str] = set()  # project folders already checked by _report_shadowed


def _report_shadowed(folder: pathlib.Path) -> None:
    """Say once which of the project's top-level modules the project cannot import because one of
    duro's dependencies (or a standard module) already holds the name."""
    taken = {n.split(".")[0] for n in _DEPENDENCIES} | set(sys.stdlib_module_names)
    shadowed = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        name = entry.stem if entry.suffix == ".py" else entry.name if (entry / "__init__.py").is_file() else ""
        if name in taken and name in sys.modules:
            shadowed.append((name, entry.name))
    if shadowed:
        log.warning("the project's module%s %s %s the name of a module duro uses; `import %s` in the project "
                    "gets duro's, not the project's file (rename the file to use it)",
                    "s" if len(shadowed) > 1 else "", ", ".join(str(folder / f) for _, f in shadowed),
                    "share" if len(shadowed) > 1 else "shares", shadowed[0][0])


def install_shims() -> None:
    """Make ``import workers``, ``import js``, ``import asgi``, ``import pyodide`` (``ffi``, ``http``,
    ``code``) resolve to duro."""
    sys.modules["workers"] = _workers
    sys.modules["asgi"] = _asgi
    # ``from workers import asgi`` / ``import workers.asgi``, the SDK's newer spellings.
    sys.modules["workers.asgi"] = _asgi
    _workers.asgi = _asgi  # type: ignore[attr-defined]
    sys.modules["workers.wsgi"] = _wsgi
    _workers.wsgi = _wsgi  # type: ignore[attr-defined]
    sys.modules["js"] = _js
    sys.modules.update(_PYODIDE_MODULES)


def load_module(path: pathlib.Path, root: pathlib.Path | None = None) -> types.ModuleType:
    """Import the project's entry file as a module named after it, with its folder on sys.path
    (so sibling modules import as usual), after duro's own dependencies. A module of the same
    name from another file is replaced. Whatever the import raises becomes one
    :class:`ProjectImportError` (``root``: the project folder, for shorter paths in it)."""
    path = path.resolve()
    folder = str(path.parent)
    preload_dependencies(folder)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    if folder not in _reported:
        _reported.add(folder)
        _report_shadowed(path.parent)
    name = path.stem
    existing = sys.modules.get(name)
    if existing is not None and getattr(existing, "__file__", None) and pathlib.Path(existing.__file__).resolve() != path:
        # Another project's module of the same name (tests load several projects in one process).
        for mod_name, mod in list(sys.modules.items()):
            f = getattr(mod, "__file__", None)
            if f and str(pathlib.Path(f).resolve()).startswith(str(pathlib.Path(existing.__file__).resolve().parent) + os.sep):
                del sys.modules[mod_name]
        sys.modules.pop(name, None)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import {path}", file=str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        raise ProjectImportError(path, root, e) from e
    return module


_SKIPPED_DIRS = {"node_modules", "__pycache__", "site-packages"}
_MAX_SCANNED_FILES = 5000


def mentions_run_sync(folder: pathlib.Path) -> bool:
    """True when a ``.py`` file in ``folder`` (recursively; hidden folders, ``node_modules`` and
    ``site-packages`` left out, at most 5,000 files) names ``run_sync``. Cloudflare's own code often
    imports it inside the function that calls it, after the first handler has started: portals
    must be on before then."""
    scanned = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in _SKIPPED_DIRS]
        for f in filenames:
            if not f.endswith(".py"):
                continue
            scanned += 1
            if scanned > _MAX_SCANNED_FILES:
                return False
            try:
                if b"run_sync" in (pathlib.Path(dirpath) / f).read_bytes():
                    return True
            except OSError:
                continue
    return False


def _check_exports(exports: Exports, module: types.ModuleType, file: str) -> None:
    """The declarative ``exports`` against the code: every live class must be defined; a
    tombstone still defined is allowed, and said (Cloudflare's ``[tombstone_class_still_in_code]``)."""
    defined = {n for n, v in vars(module).items() if isinstance(v, type)}
    exports.check_code(defined, file)
    for n in sorted(exports.tombstones & defined):
        log.info("exports: [tombstone_class_still_in_code] class %s is %s in exports but still defined in %s",
                 n, exports.entries[n].state, module.__name__)


# Cloudflare's opt-out of "pending I/O keeps a Durable Object alive" (on from 2026-10-01; duro has
# always kept objects with pending work in memory, so only the opt-out is read).
IO_TASKS_DO_NOT_PREVENT_EVICTION = "durable_object_io_tasks_do_not_prevent_eviction"


def runtime_limits(cfg: ProjectConfig) -> RuntimeLimits:
    lim = cfg.limits
    return RuntimeLimits(idle_timeout=lim.idle_timeout, hibernation_timeout=lim.hibernation_timeout,
                         max_open_databases=lim.max_open_databases, max_queued_events=lim.max_queued_events,
                         max_queued_bytes=lim.max_queued_bytes, max_queue_age=lim.max_queue_age,
                         max_name_bytes=lim.max_name_bytes, cpu_ms=lim.cpu_ms,
                         io_keepalive=0.0 if IO_TASKS_DO_NOT_PREVENT_EVICTION in cfg.compatibility_flags
                         else RuntimeLimits.io_keepalive)


def load_app(root: str | os.PathLike[str], *, data_dir: str | os.PathLike[str] | None = None,
             durability: str | None = None, clock: Clock | None = None,
             limits: RuntimeLimits | None = None, config: ProjectConfig | None = None,
             worker: WorkerSlot | None = None) -> App:
    """Build the App for the project in ``root``. ``data_dir`` defaults to the config's, else
    ``root/.duro``. ``worker``: this process's slot among ``duro serve --workers N``."""
    cfg = config or load_project(root)
    install_shims()
    if mentions_run_sync(cfg.main.parent):
        portal.enable()  # before any handler runs (see ``runtime/portal.py``)
    module = load_module(cfg.main, cfg.root)
    objects: list[ObjectClass] = []
    cfg_file = str(cfg.source) if cfg.source else None
    for b in cfg.bindings:
        cls = getattr(module, b.class_name, None)
        if cls is None:
            raise ConfigError(f"binding {b.name} names class {b.class_name!r}, but {cfg.main.name} defines no such class",
                              file=cfg_file, key=f"bindings.{b.name}")
        objects.append(ObjectClass(b.name, cls, cfg.unique_key(b.class_name)))
    if cfg.exports is not None:
        _check_exports(cfg.exports, module, cfg_file or "wrangler file")
    entry = find_entrypoint(module, cfg.entrypoint)
    data = pathlib.Path(data_dir) if data_dir is not None else (cfg.data_dir or cfg.root / ".duro")
    runtime = Runtime(data, durability=durability or cfg.durability,  # type: ignore[arg-type]
                      limits=limits or runtime_limits(cfg), clock=clock,
                      history_retention=cfg.history_retention, migrations=migrate.from_config(cfg),
                      worker=worker, file_mode=cfg.file_mode)
    values = dict(cfg.vars)
    assets = AssetServer(cfg.assets) if cfg.assets is not None else None
    if assets is not None and cfg.assets is not None and cfg.assets.binding is not None:
        values[cfg.assets.binding] = assets  # env.ASSETS.fetch(request)
    if cfg.unsupported_bindings:
        log.warning("%s: %s not provided by duro; reading %s from env raises an error saying so",
                    cfg.source.name if cfg.source else "config",
                    ", ".join(f"{n} ({w.split(' (')[0]})" for n, w in cfg.unsupported_bindings.items()),
                    "it" if len(cfg.unsupported_bindings) == 1 else "them")
    app = App(runtime, objects, entry, values, crons=cfg.crons, unsupported=dict(cfg.unsupported_bindings))
    app.config = cfg  # type: ignore[attr-defined]
    app.assets = assets  # type: ignore[attr-defined]  # the front serves them before the Worker
    app.module = module  # type: ignore[attr-defined]
    _workers.env = app.env
    return app
