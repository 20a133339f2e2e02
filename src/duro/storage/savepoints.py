"""The savepoint stack of an object's implicit transaction (``transaction()`` and duro's own
multi-statement operations), written against the connection's public surface.

Open savepoints are a stack (innermost last), kept in :class:`~duro.storage.txn.ImplicitTxn`.
Ending one also ends every savepoint opened after it, as in SQLite. It must never open or commit
the transaction itself, nor run a statement other than SAVEPOINT / RELEASE / ROLLBACK TO.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from duro.errors import SqlError
from duro.storage.txn import ImplicitTxn, LostTxn, NoTxn, critical_error

__all__ = ["Savepoints"]


class Savepoints:
    """Mixed into :class:`~duro.storage.connection.DatabaseConnection`, which provides the
    attributes annotated here."""

    txn: NoTxn | ImplicitTxn | LostTxn
    memo: dict[object, Any]
    run_internal: Callable[..., Any]
    loss: Callable[[], SqlError | None]
    sqlite_txn_open: bool

    @property
    def savepoint_depth(self) -> int:
        txn = self.txn
        return len(txn.savepoints) if type(txn) is ImplicitTxn else 0

    # Open savepoints are a stack (innermost last). Ending one also ends every savepoint opened
    # after it, as in SQLite. Ending a savepoint that has already ended is a no-op: the async
    # transaction() releases its savepoint after the closure returns even when txn.rollback()
    # already rolled it back.

    def open_savepoint(self, name: str) -> None:
        """``SAVEPOINT name`` on the stack of the implicit transaction (which must be open)."""
        self.run_internal(f"SAVEPOINT {name}", rows=False)
        txn = self.txn
        if type(txn) is ImplicitTxn:
            txn.savepoints += (name,)

    def end_savepoint(self, name: str, *, rollback: bool) -> None:
        """Keep (``RELEASE``) or undo what was written since ``name`` opened, and end it and every
        savepoint opened after it."""
        txn = self.txn
        stack = txn.savepoints if type(txn) is ImplicitTxn else ()
        if name not in stack:
            lost = self.loss()
            if lost is not None and not rollback:
                # SQLite rolled the whole transaction back under this savepoint: nothing to keep.
                raise critical_error(lost) from lost
            return
        index = len(stack) - 1 - stack[::-1].index(name)
        if rollback:
            self.abandon_savepoint(name)
        else:
            self.run_internal(f"RELEASE {name}", rows=False)
        if self.txn is txn:  # not lost meanwhile
            txn.savepoints = stack[:index]

    def abandon_savepoint(self, name: str) -> None:
        """``ROLLBACK TO name`` + ``RELEASE name``, unless the transaction is already gone. For a
        savepoint off the stack too (duro's own around a multi-statement operation)."""
        if not self.sqlite_txn_open:
            return
        self.run_internal(f"ROLLBACK TO {name}", rows=False)
        self.run_internal(f"RELEASE {name}", rows=False)
        self.memo.clear()
