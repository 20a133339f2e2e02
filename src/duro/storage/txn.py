"""The implicit transaction of one object's connection, as one explicit state.

workerd's ActorSqlite keeps its transaction as one variant (``NoTxn | ImplicitTxn | ExplicitTxn``);
so does :class:`~duro.storage.connection.DatabaseConnection`: ``NoTxn``, ``ImplicitTxn`` (with its
savepoint stack) or ``LostTxn`` (SQLite rolled it back by itself), never a set of booleans.

Plain state: it must never run SQL or know the connection; the port makes the moves.
"""

from __future__ import annotations

from duro.errors import SqlError

__all__ = ["NoTxn", "ImplicitTxn", "LostTxn", "NO_TXN", "Txn", "loss", "critical_error"]

_CRITICAL_MESSAGE = "Cannot commit transaction due to an earlier SQL critical error"

# One variant, as workerd's ActorSqlite keeps it. Legal moves:
#
#   NoTxn        --begin-->          ImplicitTxn(lost=None)
#   LostTxn(e)   --begin-->          ImplicitTxn(lost=e)     (a write after the loss, same turn)
#   ImplicitTxn  --commit/rollback-> NoTxn
#   ImplicitTxn  --SQLite rolled it back on its own--> LostTxn(error)
#   LostTxn      --commit (raises), rollback-->  NoTxn
#   (closing the connection keeps a loss: ImplicitTxn(lost=e) and LostTxn(e) become LostTxn(e))

class NoTxn:
    """No transaction is open. Next: :class:`ImplicitTxn`."""

    __slots__ = ()
    open = False

    def __repr__(self) -> str:
        return "NoTxn()"


NO_TXN = NoTxn()


class ImplicitTxn:
    """``BEGIN`` ran: the writes of the turn coalesce here until commit or rollback.
    ``savepoints`` are the open savepoints, innermost last. ``lost`` is set when an earlier
    transaction of the same turn was lost: this one can only be rolled back, and its commit fails.
    Next: :class:`NoTxn`, :class:`LostTxn`.

    Made once per turn: the fields start as class defaults (no ``__init__`` to run), and the port
    replaces them rather than mutating them."""

    open = True
    savepoints: tuple[str, ...] = ()
    lost: SqlError | None = None

    def __repr__(self) -> str:
        return f"ImplicitTxn(savepoints={self.savepoints!r}, lost={self.lost!r})"


class LostTxn:
    """SQLite rolled the transaction back by itself (a trigger's ``RAISE(ROLLBACK)``, disk full,
    ...): the writes of the turn are gone, and its commit must fail with ``error``.
    Next: :class:`NoTxn`, :class:`ImplicitTxn` (carrying ``error``)."""

    __slots__ = ("error",)
    open = False

    def __init__(self, error: SqlError) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"LostTxn({self.error!r})"

Txn = NoTxn | ImplicitTxn | LostTxn


def loss(txn: Txn) -> SqlError | None:
    """The error that lost a transaction of this turn, not reported yet; None if none was."""
    if type(txn) is LostTxn:
        return txn.error
    return txn.lost if type(txn) is ImplicitTxn else None


def critical_error(lost: SqlError) -> SqlError:
    """What a commit (or the release of a savepoint) raises after ``lost`` lost the transaction."""
    return SqlError(_CRITICAL_MESSAGE, code=lost.code, extended=lost.extended)
