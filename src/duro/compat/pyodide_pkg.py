"""The ``pyodide`` package as Cloudflare Python Workers code imports it: ``pyodide.__version__``,
``pyodide.ffi`` (``pyodide_ffi.py``), ``pyodide.http.pyfetch``, ``pyodide.code.eval_code``.

``__version__`` is the Pyodide release of Cloudflare's Python Workers whose Python (3.13) duro
runs: code that checks it for stack switching (``!= "0.26.0a2"``) takes the ``run_sync`` path.
Any other name fails with an error naming it and pointing at ``docs/cloudflare.md``.
"""

from __future__ import annotations

import types
from typing import Any

from ._missing import missing

__all__ = ["PYODIDE_VERSION", "make_modules"]

PYODIDE_VERSION = "0.28.2"


class FetchResponse:
    """``pyodide.http.FetchResponse``: what ``await pyfetch(url)`` returns (the body is read once,
    held in memory)."""

    def __init__(self, url: str, resp: Any) -> None:
        self._resp = resp
        self.url = url
        self.status = resp.status
        self.status_text = resp.status_text
        self.ok = 200 <= resp.status < 300
        self.headers = {k.lower(): v for k, v in resp.headers.items()}
        self.redirected = False
        self.type = "basic"
        self.body_used = False

    def _use(self) -> bytes:
        if self.body_used:
            raise OSError("Response body is already used")
        self.body_used = True
        return self._resp._body  # type: ignore[no-any-return]

    async def bytes(self) -> bytes:
        return self._use()

    async def memoryview(self) -> memoryview:
        return memoryview(self._use())

    async def text(self) -> str:
        return self._use().decode()

    string = text

    async def json(self, **kwargs: Any) -> Any:
        import json
        return json.loads(self._use(), **kwargs)

    def clone(self) -> "FetchResponse":
        if self.body_used:
            raise OSError("Response body is already used")
        return FetchResponse(self.url, self._resp)

    def raise_for_status(self) -> None:
        if 400 <= self.status < 600:
            kind = "Client" if self.status < 500 else "Server"
            raise OSError(f"{self.status} {kind} Error: {self.status_text} for url: {self.url}")


async def pyfetch(url: str, **kwargs: Any) -> FetchResponse:
    """``pyodide.http.pyfetch``: an outgoing request through ``workers.fetch`` (``method``,
    ``headers``, ``body``; other fetch options are ignored)."""
    from .workers import fetch
    resp = await fetch(url, method=kwargs.get("method"), headers=kwargs.get("headers"), body=kwargs.get("body"))
    return FetchResponse(str(url), resp)


def _module(name: str, doc: str, values: dict[str, Any]) -> types.ModuleType:
    mod = types.ModuleType(name, doc)
    mod.__dict__.update(values)
    mod.__all__ = sorted(k for k in values if not k.startswith("_"))  # type: ignore[attr-defined]

    def __getattr__(attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise missing(name, attr)

    mod.__getattr__ = __getattr__  # type: ignore[method-assign]
    return mod


def _eval_code(source: str, globals: dict[str, Any] | None = None, locals: dict[str, Any] | None = None,
               **_options: Any) -> Any:
    """``pyodide.code.eval_code``: run ``source``; the value of a final expression is returned."""
    import ast
    tree = ast.parse(source)
    g = {} if globals is None else globals
    last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    if last is not None:
        tree.body.pop()
    exec(compile(tree, "<exec>", "exec"), g, locals)
    if last is not None:
        return eval(compile(ast.Expression(last.value), "<exec>", "eval"), g, locals)
    return None


def make_modules(ffi: types.ModuleType) -> dict[str, types.ModuleType]:
    """The ``pyodide`` package and its submodules, by their ``sys.modules`` names."""
    http = _module("pyodide.http", "pyodide.http for duro: pyfetch over workers.fetch.",
                   {"pyfetch": pyfetch, "FetchResponse": FetchResponse})
    code = _module("pyodide.code", "pyodide.code for duro: eval_code.", {"eval_code": _eval_code})
    pkg = _module("pyodide", __doc__ or "", {"__version__": PYODIDE_VERSION, "ffi": ffi, "http": http, "code": code})
    pkg.__path__ = []  # type: ignore[attr-defined]
    return {"pyodide": pkg, "pyodide.ffi": ffi, "pyodide.http": http, "pyodide.code": code}
