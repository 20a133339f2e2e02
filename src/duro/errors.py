"""The exception tree of duro.

Every error duro raises on purpose derives from :class:`DuroError`. Each class says where it is
raised and whether the object that raised it is still usable. Messages say what was wrong and, where
Cloudflare has an exact text for the same condition, use that text verbatim.

This module imports nothing of duro.
"""

from __future__ import annotations

__all__ = [
    "JsException",
    "DuroError",
    "InvalidInputError",
    "InvalidIdError",
    "ConfigError",
    "UnknownNamespaceError",
    "UnsupportedBindingError",
    "StorageError",
    "SqlError",
    "StorageLimitError",
    "CorruptDatabaseError",
    "GateBrokenError",
    "ObjectResetError",
    "DurableObjectAbort",
    "CpuLimitExceeded",
    "OverloadedError",
    "RemoteError",
    "InternalError",
    "mark_remote",
]


class JsException(Exception):
    """What Cloudflare Python Workers code catches a JavaScript error with
    (``except pyodide.ffi.JsException as e``), so that the same ``except`` catches duro's errors:
    it is a base of every error duro raises where Cloudflare's runtime throws a JS error
    (the :class:`DuroError` tree, ``codec.DataCloneError``). ``name`` is the JS error's name
    (``Error``, ``TypeError``, ``DataCloneError``), ``message`` its message without the name."""

    js_name = "Error"

    @property
    def name(self) -> str:
        return self.js_name

    @name.setter
    def name(self, value: str | None) -> None:
        # AttributeError and ImportError set ``name`` (the missing attribute or module) in their
        # __init__; an error that is one of them too keeps that value apart from the JS name.
        self.__dict__["python_name"] = value

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class DuroError(JsException):
    """Root of every error duro raises on purpose.

    The flags mirror Cloudflare's error properties: ``remote`` (raised inside the callee),
    ``retryable`` (transient; safe to retry an idempotent call), ``overloaded`` (do not retry),
    ``durable_object_reset`` (the object's in-memory state was dropped).
    """

    remote: bool = False
    retryable: bool = False
    overloaded: bool = False
    durable_object_reset: bool = False

    # camelCase aliases as Cloudflare spells the properties.
    @property
    def durableObjectReset(self) -> bool:  # noqa: N802 - Cloudflare spelling
        return self.durable_object_reset


class InvalidInputError(DuroError, ValueError):
    """A caller passed a value duro cannot accept. Raised before anything is changed; the object is
    still usable."""


class InvalidIdError(InvalidInputError, TypeError):
    """A Durable Object ID string is malformed or belongs to another namespace. Nothing is changed."""

    js_name = "TypeError"


class ConfigError(DuroError):
    """A project's configuration is wrong. The message names the file, the key and what is wrong.
    Raised at start-up; nothing runs."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        where = ""
        if file and key:
            where = f"{file}: {key}: "
        elif file:
            where = f"{file}: "
        elif key:
            where = f"{key}: "
        super().__init__(where + message)


class UnknownNamespaceError(DuroError):
    """No class is registered for the namespace an object belongs to: an alarm in the node's index
    (or a request) names a namespace the running project no longer has (a class removed or
    renamed). Raised by the runtime before anything of the object is opened; nothing is changed,
    and the object's data, alarm included, stays for a project that has the class."""


class UnsupportedBindingError(DuroError, AttributeError):  # type: ignore[misc]  # JS name vs attribute name
    """``env.NAME`` names a binding to a Cloudflare service duro does not provide (Workers KV, D1,
    Workers AI, Workflows, ...), declared in the wrangler file. Raised when the attribute is read;
    an ``AttributeError``, so ``hasattr(env, "NAME")`` is False. Nothing else is affected."""


class StorageError(DuroError):
    """A storage operation failed. Raised from ``ctx.storage``; the object is still usable unless
    the failure happened at commit, in which case the object is reset."""


class SqlError(StorageError):
    """SQLite refused a statement. The message is Cloudflare's format:
    ``<sqlite message>: <CODE>``. The statement had no effect; the object is still usable."""

    def __init__(self, message: str, *, code: str = "SQLITE_ERROR", extended: str | None = None) -> None:
        self.code = code
        self.extended = extended
        super().__init__(message)


class StorageLimitError(SqlError):
    """A key, value, row or database exceeded a size limit. Nothing was stored; still usable."""


class CorruptDatabaseError(StorageError):
    """An object's database file is damaged or not a database. That object fails every event with
    this error until repaired; every other object keeps working."""


class GateBrokenError(DuroError):
    """A gate broke: a commit failed or a critical section threw. Sticky: the instance is reset and
    every pending and future call through the same stub fails with this error."""

    durable_object_reset = True


class ObjectResetError(GateBrokenError):
    """The object was reset (``abort()``, a failed ``block_concurrency_while``, a failed commit, a
    code reload). Callers holding its stub must create a new one."""


class DurableObjectAbort(BaseException):
    """Raised inside an object by ``ctx.abort()``. A ``BaseException`` so that ``except Exception``
    in user code cannot swallow it; the runtime turns it into a reset."""

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason or "Application called abort() to reset Durable Object."
        super().__init__(self.reason)


class CpuLimitExceeded(BaseException):
    """Raised inside an object's code when its event ran past its CPU budget (``limits.cpu_ms``),
    and again at every later tick if the code catches it (Cloudflare's Python Workers raise a
    ``CpuLimitExceeded`` that is a ``BaseException`` too). The object is reset; its caller gets
    ``ObjectResetError("Durable Object exceeded its CPU time limit and was reset.")``."""


class OverloadedError(DuroError):
    """Too much work is queued for one object. The call was not delivered; do not retry at once."""

    overloaded = True


class RemoteError(DuroError):
    """An exception raised inside an object, of a type the caller cannot rebuild. ``remote_type`` is
    the original type name; the message is the original message."""

    remote = True

    def __init__(self, remote_type: str, message: str) -> None:
        self.remote_type = remote_type
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.remote_type}: {self.args[0]}" if self.args and self.args[0] else self.remote_type


class InternalError(DuroError):
    """A bug in duro itself. Never raised for user mistakes."""


def mark_remote(exc: BaseException, *, retryable: bool | None = None, overloaded: bool | None = None) -> BaseException:
    """Set Cloudflare's error flags on ``exc`` (works on built-in exception types too)."""
    exc.remote = True  # type: ignore[attr-defined]
    if retryable is not None:
        exc.retryable = retryable  # type: ignore[attr-defined]
    elif not hasattr(exc, "retryable"):
        exc.retryable = False  # type: ignore[attr-defined]
    if overloaded is not None:
        exc.overloaded = overloaded  # type: ignore[attr-defined]
    elif not hasattr(exc, "overloaded"):
        exc.overloaded = False  # type: ignore[attr-defined]
    return exc
