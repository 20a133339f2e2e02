"""Loading a project: read its config, put the compatibility modules in place, import its entry
module, and build the :class:`~duro.api.App`.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sys
import types

from ..api import App, ObjectClass
from ..api.app import find_entrypoint
from ..clock import Clock
from ..config import ProjectConfig, load_project
from ..errors import ConfigError
from ..runtime import Runtime, RuntimeLimits
from . import asgi as _asgi
from . import js as _js
from . import pyodide_ffi as _ffi
from . import workers as _workers

__all__ = ["install_shims", "load_app", "load_module"]


def install_shims() -> None:
    """Make ``import workers``, ``import js``, ``import asgi`` and ``from pyodide.ffi import to_js``
    resolve to duro."""
    sys.modules["workers"] = _workers
    sys.modules["asgi"] = _asgi
    # ``from workers import asgi`` / ``import workers.asgi``, the SDK's newer spellings.
    sys.modules["workers.asgi"] = _asgi
    _workers.asgi = _asgi  # type: ignore[attr-defined]
    sys.modules["js"] = _js
    pyodide = types.ModuleType("pyodide")
    pyodide.__path__ = []  # type: ignore[attr-defined]
    pyodide.ffi = _ffi  # type: ignore[attr-defined]
    sys.modules["pyodide"] = pyodide
    sys.modules["pyodide.ffi"] = _ffi


def load_module(path: pathlib.Path) -> types.ModuleType:
    """Import the project's entry file as a module named after it, with its folder on sys.path
    (so sibling modules import as usual). A module of the same name from another file is replaced."""
    path = path.resolve()
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
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
    except Exception:
        sys.modules.pop(name, None)
        raise
    return module


def runtime_limits(cfg: ProjectConfig) -> RuntimeLimits:
    lim = cfg.limits
    return RuntimeLimits(idle_timeout=lim.idle_timeout, hibernation_timeout=lim.hibernation_timeout,
                         max_open_databases=lim.max_open_databases, max_queued_events=lim.max_queued_events)


def load_app(root: str | os.PathLike[str], *, data_dir: str | os.PathLike[str] | None = None,
             durability: str | None = None, clock: Clock | None = None,
             limits: RuntimeLimits | None = None, config: ProjectConfig | None = None) -> App:
    """Build the App for the project in ``root``. ``data_dir`` defaults to the config's, else
    ``root/.duro``."""
    cfg = config or load_project(root)
    install_shims()
    module = load_module(cfg.main)
    objects: list[ObjectClass] = []
    cfg_file = str(cfg.source) if cfg.source else None
    for b in cfg.bindings:
        cls = getattr(module, b.class_name, None)
        if cls is None:
            raise ConfigError(f"binding {b.name} names class {b.class_name!r}, but {cfg.main.name} defines no such class",
                              file=cfg_file, key=f"bindings.{b.name}")
        objects.append(ObjectClass(b.name, cls, cfg.unique_key(b.class_name)))
    entry = find_entrypoint(module, cfg.entrypoint)
    data = pathlib.Path(data_dir) if data_dir is not None else (cfg.data_dir or cfg.root / ".duro")
    runtime = Runtime(data, durability=durability or cfg.durability,  # type: ignore[arg-type]
                      limits=limits or runtime_limits(cfg), clock=clock,
                      history_retention=cfg.history_retention)
    app = App(runtime, objects, entry, dict(cfg.vars), crons=cfg.crons)
    app.config = cfg  # type: ignore[attr-defined]
    app.module = module  # type: ignore[attr-defined]
    _workers.env = app.env
    return app
