"""Cloudflare compatibility: the ``workers``, ``js``, ``asgi`` and ``pyodide.ffi`` modules that Cloudflare
Python Workers import resolve to duro, and a project (pyproject ``[tool.duro]`` or an unchanged
``wrangler.jsonc`` / ``wrangler.toml``) is loaded into an :class:`~duro.api.App`."""

from .project import ProjectImportError, install_shims, load_app, load_module, preload_dependencies

__all__ = ["ProjectImportError", "install_shims", "load_app", "load_module", "preload_dependencies"]
