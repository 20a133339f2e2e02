"""The ``txn`` a ``ctx.storage.transaction()`` closure is given (Cloudflare's texts for its misuse)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable

from ..core.limits import TEXT_DELETE_ALL_IN_TXN
from ..runtime.calls import Failed

if TYPE_CHECKING:
    from .storage import DurableObjectStorage, JsDict

__all__ = ["Transaction"]


class Transaction:
    """The ``txn`` handed to a ``transaction()`` closure. Every storage call inside the closure is
    part of the transaction anyway; ``txn`` exists for Cloudflare compatibility and ``rollback()``."""

    def __init__(self, storage: "DurableObjectStorage") -> None:
        self._storage = storage
        self._done = False
        self._rolled_back = False
        self._savepoint: str | None = None

    def _check(self, op: str) -> None:
        # Cloudflare's texts, with the method's JavaScript name and its parentheses.
        if self._rolled_back:
            raise RuntimeError(f"Cannot {op}() on rolled back transaction")
        if self._done:
            raise RuntimeError(f"Cannot call {op}() on transaction that has already committed: "
                               "did you move `txn` outside of the closure?")

    def _op(self, op: str, method: Callable[..., Any], a: tuple[Any, ...], k: dict[str, Any]) -> Any:
        """Run ``method`` now, as every storage call does; a refused call fails when awaited."""
        try:
            self._check(op)
        except RuntimeError as e:
            return Failed(e, op, self._storage._act.unawaited_storage_failure)
        return method(*a, **k)

    def get(self, *a: Any, **k: Any) -> Awaitable[Any]:
        return self._op("get", self._storage.get, a, k)

    def put(self, *a: Any, **k: Any) -> Awaitable[None]:
        return self._op("put", self._storage.put, a, k)

    def delete(self, *a: Any, **k: Any) -> Awaitable[Any]:
        return self._op("delete", self._storage.delete, a, k)

    def list(self, *a: Any, **k: Any) -> "Awaitable[JsDict]":
        return self._op("list", self._storage.list, a, k)

    def get_alarm(self, *a: Any, **k: Any) -> Awaitable[int | None]:
        return self._op("getAlarm", self._storage.get_alarm, a, k)

    def set_alarm(self, *a: Any, **k: Any) -> Awaitable[None]:
        return self._op("setAlarm", self._storage.set_alarm, a, k)

    def delete_alarm(self, *a: Any, **k: Any) -> Awaitable[None]:
        return self._op("deleteAlarm", self._storage.delete_alarm, a, k)

    getAlarm = get_alarm  # noqa: N815
    setAlarm = set_alarm  # noqa: N815
    deleteAlarm = delete_alarm  # noqa: N815

    def delete_all(self, *a: Any, **k: Any) -> Awaitable[None]:
        return Failed(RuntimeError(TEXT_DELETE_ALL_IN_TXN), "deleteAll",
                      self._storage._act.unawaited_storage_failure)

    deleteAll = delete_all  # noqa: N815

    def rollback(self) -> None:
        if self._rolled_back:
            return  # rollback() may be called more than once
        self._check("rollback")
        assert self._savepoint is not None
        self._storage._db.rollback_to(self._savepoint)
        self._rolled_back = True

    def __getattr__(self, name: str) -> Any:
        # Any other storage member (``sql``, ``kv``, ``sync``, ...), with the same checks.
        target = getattr(self._storage, name)
        if not callable(target):
            return target

        def call(*a: Any, **k: Any) -> Any:
            self._check(name)
            return target(*a, **k)
        return call
