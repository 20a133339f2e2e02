"""The error for a ``js`` / ``pyodide`` name duro does not provide: it names the name and points
at the audit in ``docs/cloudflare.md``.

``js.X`` and ``getattr``/``hasattr`` get an ``AttributeError`` (so feature checks keep working);
``from js import X`` gets an ``ImportError`` with the same text, because Python replaces an
``AttributeError`` raised there by a generic "cannot import name" that loses it.
"""

from __future__ import annotations

import dis
import sys

__all__ = ["DOCS", "MissingImportError", "MissingNameError", "missing"]

DOCS = "docs/cloudflare.md#what-js-and-pyodide-provide"

_IMPORT_FROM = dis.opmap["IMPORT_FROM"]


class MissingNameError(AttributeError):
    """A ``js`` / ``pyodide`` name duro does not provide (``js.HTMLRewriter``)."""


class MissingImportError(ImportError):
    """``from js import X`` for a name duro does not provide."""


def missing(module: str, name: str, why: str | None = None) -> Exception:
    """The error for ``module.name`` (called from the module's ``__getattr__``, to be raised)."""
    text = (f"{module}.{name} is not available in duro: {why or 'no CPython equivalent is provided'} "
            f"(see {DOCS})")
    frame = sys._getframe(2)  # the code that looked the name up (past the module's __getattr__)
    code = frame.f_code.co_code
    if 0 <= frame.f_lasti < len(code) and code[frame.f_lasti] == _IMPORT_FROM:
        return MissingImportError(text, name=module)
    return MissingNameError(text, name=name)
