"""The storage port: one object's SQLite connection, which kv.py, sql.py and database.py use.

Owns opening the file (configured by ``opening.py``: flags, limits, the setup pragmas, telling a
damaged file apart), closing it (at once, or with the part that waits on the disk offloaded to a
worker thread: ``closing.py``), checkpoints (the periodic PASSIVE one, its worker half also in
``closing.py``, and the TRUNCATE one), the translation of apsw errors together with what they do
to the state (a damaged database is closed and stays failed; a transaction SQLite rolled back by
itself is recorded as lost), the implicit transaction as one explicit state (``txn.py``: NoTxn,
ImplicitTxn, LostTxn; its savepoint stack in ``savepoints.py``), and the rule about the
authorizer: duro's own statements run through :meth:`DatabaseConnection.run_internal`, with the
authorizer bypassed and the INTERNAL prepare flag; user statements run through
:meth:`DatabaseConnection.run_user`, always with the authorizer on. Nothing else sets ``bypass``.
A write commit's pages are read back from the WAL once (``journal.capture_commit``).

It must never: fsync the WAL (the runtime makes commits durable with its own batched fdatasync);
start threads or use asyncio (work reaches a thread only through the ``offload`` callback the
runtime passes); let an apsw exception out untranslated (except ``apsw.BindingsError`` from
:meth:`~DatabaseConnection.run_user`, which changes no state and which the SQL layer words); know
what the KV table, the alarm row or a SQL cursor mean.
"""

from __future__ import annotations

import pathlib
import threading
from collections.abc import Callable
from typing import Any

import apsw

from duro.errors import CorruptDatabaseError, InternalError, SqlError, StorageError
from duro.storage.authorizer import Authorizer
from duro.storage.closing import checkpoint_on_worker, close_on_worker, close_quietly, closing_any, wait_closed
from duro.storage.history import apply_pending_restore
from duro.storage.durability import History, JournalLink
from duro.storage.journal import WalTail, capture_commit, history_path, marker_path
from duro.storage.journalfile import Capture
from duro.storage.opening import connect, create_empty, wal_descriptor
from duro.storage.paths import make_dirs_durably
from duro.storage.rowcounts import RowCounter
from duro.storage.savepoints import Savepoints
from duro.storage.translate import CORRUPT_CODES, corrupt_error, translate
from duro.storage.txn import NO_TXN, ImplicitTxn, LostTxn, NoTxn, critical_error, loss

__all__ = ["DatabaseConnection", "wait_closed", "INTERNAL", "CHECKPOINT_PAGES", "PROGRESS_STEPS"]

CHECKPOINT_PAGES = 1000  # SQLite's own auto-checkpoint threshold
# SQLite VM steps between two calls of the ``interrupt`` check (~1 ms of a busy statement; a
# Python call each time, so not much more often).
PROGRESS_STEPS = 20_000

# The prepare flag of duro's own statements. SQLITE_PREPARE_NORMALIZE is a no-op in SQLite today;
# it only makes apsw's statement cache keep these statements apart from user statements of the same
# text (the cache key includes the prepare flags), so user SQL can never reuse a statement that was
# authorized with the bypass on.
INTERNAL = apsw.SQLITE_PREPARE_NORMALIZE

def _not_open() -> int:
    raise InternalError("the database connection is not open")


class DatabaseConnection(Savepoints):
    """One object's connection, opened on demand, and its implicit transaction.

    ``memo`` holds facts about the open database that stay true until a rollback undoes a write
    they saw (which tables exist, the alarm row as last read): the port empties it (in place) on
    every open, close and rollback, so it is empty while the connection is closed (a table known
    to exist means the connection is open); callers read it and record what they create or drop.
    """

    def __init__(self, path: pathlib.Path, *, history: History | None,
                 on_transaction_open: Callable[[], None] | None,
                 offload: Callable[[Callable[[], None]], None] | None,
                 journal: JournalLink | None = None, interrupt: Callable[[], bool] | None = None) -> None:
        self.path = path
        # Asked every PROGRESS_STEPS SQLite VM steps; True interrupts the running statement
        # (SQLITE_INTERRUPT): the runtime's CPU limit (runtime/cpulimit.py) for SQL.
        self._interrupt = interrupt
        self.wal_path = path.with_name(path.name + "-wal")
        self.shm_path = path.with_name(path.name + "-shm")
        self.history = history
        # The node journal, when it is the durability source (see JournalLink): every write
        # commit is read back from the WAL once (``_tail``) into ``captured``, for the journal and
        # the history alike; SQLite itself syncs nothing.
        self.journal = journal
        self._tail = WalTail(self.wal_path) if (history is not None or journal is not None) else None
        self.captured: Capture | None = None
        self.restored: str | None = None  # the bookmark of a scheduled restore the last open carried out
        if journal is not None and history is not None:
            history.deferred_sync = True  # the journal syncs it, with the database file, later
        # Periodic checkpoints (every ~CHECKPOINT_PAGES WAL pages) fsync the WAL and the database:
        # the runtime passes ``offload`` to run them on a worker thread, off the event loop. Tools
        # (no offload) checkpoint inline. Opening and closing wait for a checkpoint in progress.
        self.offload = offload
        self._on_transaction_open = on_transaction_open
        self._wal_pages = 0
        self._wal_commits = 0
        self._ckpt_idle = threading.Event()
        self._ckpt_idle.set()
        self._mark_changed = False  # history off, but a history exists: tell it we write (commit())
        self._conn: apsw.Connection | None = None
        self._cur: apsw.Cursor | None = None  # duro's own statements
        self._ucur: apsw.Cursor | None = None  # user SQL (has the column-name exec tracer)
        self._auth = Authorizer()
        self._corrupt: CorruptDatabaseError | None = None
        self.txn: NoTxn | ImplicitTxn | LostTxn = NO_TXN
        self.memo: dict[object, Any] = {}
        self.commit_count = 0
        # The columns of the last user statement prepared (set by the exec tracer), or None.
        self.user_description: tuple[tuple[str, Any], ...] | None = None
        # While open, the connection's own counters, bound once (a C call on the hot path):
        # rows changed by the last statement, and since the connection opened.
        self.changes: Callable[[], int] = _not_open
        self.total_changes: Callable[[], int] = _not_open
        # Cloudflare's row counters of the last user statement run to its end (rows read, rows
        # written), kept by ``counter`` (storage/rowcounts.py).
        self.counter = RowCounter(self.run_internal)
        self.last_counts: tuple[int, int] = (0, 0)
        # Since this object was made: rows read and written by user SQL (Cloudflare's counts) and
        # KV calls (a row per key). Read around an event for ``duro tail`` and ``/metrics``.
        self.rows_read = 0
        self.rows_written = 0

    # ---- state ------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    @property
    def corrupt(self) -> CorruptDatabaseError | None:
        """The error every operation raises once the file was found damaged; None if it was not."""
        return self._corrupt

    @property
    def in_transaction(self) -> bool:
        return self.txn.open

    @property
    def sqlite_txn_open(self) -> bool:
        """Whether SQLite's own transaction is open (it may have rolled back by itself)."""
        conn = self._conn
        return conn is not None and not conn.get_autocommit()

    def loss(self) -> SqlError | None:
        """The error that lost a transaction of this turn, not reported yet; None if none was."""
        return loss(self.txn)

    def table_exists(self, name: str) -> bool:
        """Whether the table ``name`` exists. Kept in :attr:`memo`: only duro creates or drops its
        own tables, and it records them there."""
        known = self.memo.get(name)
        if known is None:
            try:
                known = self._conn.table_exists("main", name)
            except apsw.Error as e:
                raise self._error(e) from e
            self.memo[name] = known
        return known

    def readable(self, table: str) -> bool:
        """Whether ``table`` can be read: an existing file is opened (a missing one is never
        created) and the table is there. The first check of every read."""
        if self._conn is None and not self.open(create=False):
            return False
        known = self.memo.get(table)
        return self.table_exists(table) if known is None else known

    # ---- opening and closing ----------------------------------------------------------------

    def open(self, create: bool) -> bool:
        """Open the connection if needed; True once it is open. With ``create=False`` a missing
        file stays missing and False is returned. A damaged file raises CorruptDatabaseError, now
        and on every later call."""
        if self._conn is not None:
            return True
        if self._corrupt is not None:
            raise self._corrupt
        self._ckpt_idle.wait()
        if closing_any():
            wait_closed(self.path)
        journal = self.journal
        if journal is not None:
            journal.check_open()
        history = self.history
        if history is not None and not history.restore_checked:
            history.restore_checked = True  # once per instance: a restore waits for the next session
            self.restored = None
            if marker_path(self.path).exists():  # (one stat: a missing marker is the usual case)
                if journal is not None:
                    # The restore rewrites the file: the journal must first know, durably, that
                    # none of its older records is to be redone over it.
                    journal.synced(journal.position(), durable=True)
                self.restored = apply_pending_restore(self.path, history.options)
        existed = self.path.exists()
        self._mark_changed = history is None and existed and history_path(self.path).exists()
        if not existed:
            if not create:
                return False
            make_dirs_durably(self.path.parent)
            # A WAL left behind by a deleted database must never be replayed into a new one.
            self.wal_path.unlink(missing_ok=True)
            self.shm_path.unlink(missing_ok=True)
            if journal is not None:
                create_empty(self.path)
        try:
            conn = connect(self.path, create=create, journaled=journal is not None)
        except CorruptDatabaseError as e:
            self._corrupt = e
            raise
        if conn is None:
            return False
        conn.authorizer = self._auth
        if self._interrupt is not None:
            conn.set_progress_handler(self._interrupt, PROGRESS_STEPS)
        # The hook replaces SQLite's auto-checkpoint, which would fsync inside COMMIT on the loop.
        self._wal_pages = 0
        self._wal_commits = 0  # commits that wrote WAL frames (SQLite's WAL hook counts them)
        conn.set_wal_hook(self._wal_hook)
        self._conn = conn
        if self._tail is not None:
            wal = self.wal_path
            self._tail.lend(lambda: wal_descriptor(conn, wal))  # SQLite's descriptor: one fewer
        self.changes = conn.changes
        self.total_changes = conn.total_changes
        self._cur = conn.cursor()
        self._ucur = conn.cursor()
        self._ucur.exec_trace = self._trace
        self.memo.clear()
        if history is not None:
            try:
                history.attach(self.run_internal_uncached, self.checkpoint, existed)
            except BaseException:
                self.close()
                raise
        return True

    def close(self) -> None:
        """Close the connection now: an open transaction is dropped, SQLite checkpoints (with a
        journal: once the journal holds every commit durably; then the file is synced)."""
        self._ckpt_idle.wait()
        journal = self.journal
        conn = self._conn
        if journal is not None and conn is not None:
            lsn = journal.position()
            if not journal.wait_durable(lsn):
                self._close_unjournaled(conn)
                return
        if self.history is not None:
            self.history.close()
        self._forget_connection()
        if conn is not None:
            if close_quietly(conn, self.shm_path) and journal is not None:
                journal.written(lsn)

    def _close_unjournaled(self, conn: apsw.Connection) -> None:
        """Close without a checkpoint: the WAL holds a commit the journal could not make durable.
        The file is redone from the journal (the object resets to its last durable commit)."""
        journal = self.journal
        assert journal is not None
        if self.history is not None:
            self.history.close()
        self._forget_connection()
        conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
        conn.close()
        journal.recover()

    def _forget_connection(self) -> None:
        self._conn = self._cur = self._ucur = None
        if self._tail is not None:
            self._tail.close()
        self.captured = None
        self.changes = self.total_changes = _not_open
        self.counter.forget_schema()
        lost = self.loss()
        self.txn = NO_TXN if lost is None else LostTxn(lost)  # a loss is reported by the commit
        self.memo.clear()

    def close_offloaded(self, empty: bool) -> None:
        """Close, with only the bookkeeping done here: the part that waits on the disk (fsyncing
        the history, SQLite's checkpoint as the connection closes, removing the files of an
        ``empty`` database) runs through ``offload``, and opening the file again waits until it
        is done. The caller has ended the transaction."""
        offload = self.offload
        assert offload is not None
        history = self.history.detach() if self.history is not None else None
        conn = self._conn
        assert conn is not None
        journal = self.journal
        lsn = journal.position() if journal is not None else 0
        self._forget_connection()
        close_on_worker(conn, history, (self.path, self.wal_path, self.shm_path), empty, self._ckpt_idle,
                        offload, journal=journal, lsn=lsn)

    def wait_closed(self) -> None:
        """Return once no offloaded close of this file is in progress."""
        if closing_any():
            wait_closed(self.path)

    def remove_files(self) -> None:
        """Delete the database, ``-wal`` and ``-shm`` files (the connection is closed)."""
        for p in (self.path, self.wal_path, self.shm_path):
            p.unlink(missing_ok=True)

    def discard(self) -> None:
        """Checkpoint, close and delete the files of an open database the caller found empty. The
        history, fsynced first (a checkpoint must not get ahead of it), stays, ending in the empty
        state."""
        journal = self.journal
        lsn = journal.position() if journal is not None else 0
        if journal is not None and not journal.wait_durable(lsn):
            self._close_unjournaled(self._conn)
            return
        if self.history is not None:
            self.history.sync()
        self.checkpoint()
        if journal is None:
            self.close()
        else:
            conn = self._conn
            if self.history is not None:
                self.history.close()
            self._forget_connection()
            close_quietly(conn, self.shm_path)  # checkpointed above (TRUNCATE): the files go now
        self.remove_files()
        if self.history is not None:
            self.history.after_discard()
        if journal is not None:
            # The files are gone for good once their folder is synced: the journal's next pass.
            journal.written(lsn)

    # ---- running statements ----------------------------------------------------------------

    def run_internal(self, sql: str, bindings: Any = None,
                     not_unicode: Callable[[Any], Exception] | None = None, *,
                     cache: bool = True, first: bool = False, rows: bool = True) -> Any:
        """Run one of duro's own statements and return its rows (``first``: its first row, or
        None, without stepping it further; ``rows=False``: nothing, for a statement that returns
        no rows). The authorizer is bypassed for it alone, and it is prepared with the INTERNAL
        flag, apart from user statements in apsw's statement cache. ``cache=False`` keeps a rare
        statement from evicting the user's. A ``str`` binding that is not valid Unicode raises
        ``not_unicode(bindings)`` (the caller words it), or UnicodeEncodeError."""
        auth = self._auth
        auth.bypass = True
        try:
            if cache:  # the usual case, without the keyword apsw would have to match
                cur = self._cur.execute(sql, bindings, prepare_flags=INTERNAL)
            else:
                cur = self._cur.execute(sql, bindings, can_cache=False, prepare_flags=INTERNAL)
            # A key lookup stops at its row: fetchall() would step the statement once more. A write
            # has run to its end in execute(); fetching nothing costs a list (measured, per call).
            if first:
                return cur.fetchone()
            return cur.fetchall() if rows else None
        except apsw.Error as e:
            raise self._error(e) from e
        except UnicodeEncodeError:
            if not_unicode is None:
                raise
            raise not_unicode(bindings) from None
        finally:
            auth.bypass = False

    def run_internal_uncached(self, sql: str, bindings: Any = None) -> list[tuple[Any, ...]]:
        """:meth:`run_internal` kept out of the statement cache (the history's rare statements)."""
        return self.run_internal(sql, bindings, cache=False)

    def backup_into(self, out: pathlib.Path) -> bool:
        """Copy the database as this connection sees it into the new file ``out`` (SQLite's online
        backup, one step). False, and no file, when the database does not exist."""
        if self._conn is None and not self.open(create=False):
            return False
        assert self._conn is not None
        dest = apsw.Connection(str(out))
        try:
            with dest.backup("main", self._conn, "main") as b:
                b.step(-1)
        except apsw.Error as e:
            raise StorageError(f"cannot copy the database to {str(out)!r}: {e}") from e
        finally:
            dest.close()
        return True

    def run_user(self, sql: str, bindings: Any, all_rows: bool = True) -> list[tuple[Any, ...]] | None:
        """Run one user statement with the authorizer on; its rows (``all_rows=False``: only its
        first step, none returned). :attr:`user_description` then holds its columns (None if the
        text held no statement). Returns None when the authorizer refused an ``ALTER TABLE`` only
        because it cannot see a new name: the SQL layer re-runs it with :meth:`run_user_alter`.

        A denial with a better message than SQLite's raises SqlError(code SQLITE_AUTH) with it;
        ``apsw.BindingsError`` (wrong number of bindings) is let through for the SQL layer to word;
        OverflowError / UnicodeEncodeError from a binding too."""
        auth = self._auth
        auth.message = None
        auth.alter_pending = False
        self.user_description = None
        try:
            if not all_rows:
                self._ucur.execute(sql, bindings)
                return []
            conn = self._conn
            counter = self.counter
            counter.start(conn, sql)
            try:
                rows = self._ucur.execute(sql, bindings).fetchall()
            finally:
                counter.stop(conn)
            counts = self.last_counts = counter.finish(sql, bindings, len(rows))
            self.rows_read += counts[0]
            self.rows_written += counts[1]
            return rows
        except apsw.BindingsError:
            raise
        except apsw.AuthError as e:
            if auth.alter_pending:
                return None
            if auth.message is not None:
                raise SqlError(auth.message, code="SQLITE_AUTH") from None
            raise self._error(e) from None
        except apsw.Error as e:
            raise self._error(e) from None

    def run_user_alter(self, sql: str, bindings: Any) -> list[tuple[Any, ...]]:
        """Re-run a user ``ALTER TABLE`` that :meth:`run_user` returned None for: the authorizer
        allows it this once (the caller checks the names it produced), and it is never cached, so
        it always comes back through :meth:`run_user` first."""
        auth = self._auth
        auth.alter_guard = True
        try:
            return self._ucur.execute(sql, bindings, can_cache=False).fetchall()
        except apsw.Error as e:
            raise self._error(e) from None
        finally:
            auth.alter_guard = False

    def _trace(self, cursor: apsw.Cursor, sql: str, bindings: Any) -> bool:
        # apsw's exec tracer runs after a statement is prepared and before it steps: the only
        # moment the column names of a statement that returns no rows can be read. It also runs for
        # text with no statement in it (has_vdbe is False), which must not count as one.
        if cursor.has_vdbe:
            self.user_description = cursor.get_description()
        return True

    def _error(self, exc: apsw.Error) -> StorageError:
        """Translate ``exc`` and update the state: a damaged database is closed and stays failed;
        a transaction SQLite rolled back on its own is recorded as lost."""
        if getattr(exc, "result", None) in CORRUPT_CODES:
            self._corrupt = corrupt_error(self.path, exc)
            try:
                self.close()
            except apsw.Error:
                self._conn = None  # the connection is unusable either way; the error below says why
            return self._corrupt
        err = translate(exc) if getattr(exc, "result", None) is not None else StorageError(str(exc))
        conn = self._conn
        if self.txn.open and conn is not None and conn.get_autocommit():
            # SQLite rolled the whole transaction back (a trigger's RAISE(ROLLBACK), disk full, ...):
            # the writes of this turn are gone, so its commit must fail.
            self.txn = LostTxn(err if isinstance(err, SqlError) else SqlError(str(err)))
            self.memo.clear()
        return err

    # ---- the implicit transaction ------------------------------------------------------------

    def ensure_transaction(self) -> None:
        """Open the file (creating it) and the implicit transaction, if they are not open."""
        if not self.txn.open:
            if self._conn is None:
                self.open(create=True)
            self.run_internal("BEGIN", rows=False)
            txn = self.txn
            self.txn = new = ImplicitTxn()
            if type(txn) is LostTxn:
                new.lost = txn.error
            callback = self._on_transaction_open
            if callback is not None:
                callback()

    def commit(self, before_write: Callable[[], None] | None = None) -> bool:
        """Commit the implicit transaction. True if it wrote anything; False if none was open or it
        only read. ``before_write`` runs first when it wrote, inside it. On failure (a deferred
        foreign-key violation, a transaction SQLite already rolled back) the transaction is rolled
        back and SqlError is raised."""
        txn = self.txn
        if type(txn) is not ImplicitTxn:
            if type(txn) is LostTxn:
                self.txn = NO_TXN
                raise critical_error(txn.error) from txn.error
            return False
        if txn.lost is not None:
            self.rollback()
            raise critical_error(txn.lost) from txn.lost
        if txn.savepoints:
            raise InternalError(f"commit() called with savepoints still open: {txn.savepoints}")
        conn = self._conn
        wrote = conn.txn_state() == apsw.SQLITE_TXN_WRITE
        try:
            if wrote:
                if before_write is not None:
                    before_write()
                if self.history is not None:
                    self.history.prepare_commit()
                elif self._mark_changed:
                    # Writes made with history off: the history must snapshot when it is next used.
                    self.run_internal_uncached("PRAGMA user_version = 1")
                    self._mark_changed = False
            framed = self._wal_commits
            self.run_internal("COMMIT", rows=False)
        except StorageError:
            # The error raised here is the report of the loss, if SQLite rolled back by itself.
            if self.sqlite_txn_open:
                self.run_internal("ROLLBACK", rows=False)
            self.txn = NO_TXN
            self.memo.clear()
            raise
        self.txn = NO_TXN
        if wrote:
            self.commit_count += 1
            tail = self._tail
            if tail is not None:
                hooked = self._wal_commits != framed  # SQLite's WAL hook ran: this commit wrote frames
                self.captured = capture_commit(tail, self.history, self.journal is not None,
                                               self._wal_pages if hooked else 0)
                if hooked and tail.frames != self._wal_pages:
                    # SQLite wrote this commit's frames (its WAL hook says the WAL now ends at
                    # frame _wal_pages) but the reader did not end there: never acknowledge a
                    # commit whose journal record (or history) may lack its pages; the object
                    # resets to its last durable commit instead.
                    raise StorageError(f"the commit's pages could not be read back from {str(tail.path)!r} "
                                       f"(the WAL ends at frame {self._wal_pages}, the reader at "
                                       f"{tail.frames}); the object resets to its last durable commit")
            if self._wal_pages >= CHECKPOINT_PAGES and self.journal is None:
                self._periodic_checkpoint()
        return wrote

    def release_fds(self) -> None:
        """An idle open object gives back the descriptors duro holds beside SQLite's (the history
        file's, and the WAL reader's when it could not read through SQLite's own); the next commit
        opens them again. With a journal an idle open object then holds three (database, -wal,
        -shm)."""
        if self.txn.open or self._conn is None:
            return
        if self._tail is not None:
            self._tail.release()
        release = getattr(self.history, "release", None)
        if release is not None:
            release()

    @property
    def needs_checkpoint(self) -> bool:
        """With a journal: the WAL has grown past the checkpoint threshold (see
        :meth:`checkpoint_journaled`)."""
        return self._wal_pages >= CHECKPOINT_PAGES

    def checkpoint_journaled(self) -> bool:
        """With a journal, on the event loop, outside a transaction: once every commit in the WAL
        is durable in the journal (this waits for it: one journal flush, once per ~1,000 WAL
        pages), copy the WAL into the database file (no fsync: synchronous=OFF) and tell the
        journal, which syncs the file in its next pass and then may drop the records. False if it
        could not run now (a transaction is open, or the journal failed: the object is resetting)."""
        journal = self.journal
        assert journal is not None
        if self.txn.open or self._conn is None:
            return False
        lsn = journal.position()
        if not journal.wait_durable(lsn):
            return False
        self._wal_pages = 0
        self.checkpoint(passive=True)
        journal.written(lsn)
        return True

    def rollback(self) -> None:
        """Drop the implicit transaction and everything written in it (and any savepoints), and
        forget a loss not yet reported."""
        txn = self.txn
        self.txn = NO_TXN
        if not txn.open:
            return
        self.memo.clear()
        if self.sqlite_txn_open:
            self.run_internal("ROLLBACK", rows=False)

    # ---- checkpoints -------------------------------------------------------------------------

    def checkpoint(self, passive: bool = False) -> None:
        """TRUNCATE (the history needs an empty WAL when it attaches; an empty database before
        its files go), or PASSIVE (which must never fail because someone is reading)."""
        mode = apsw.SQLITE_CHECKPOINT_PASSIVE if passive else apsw.SQLITE_CHECKPOINT_TRUNCATE
        try:
            self._conn.wal_checkpoint(mode=mode)
        except apsw.Error as e:
            raise self._error(e) from e

    def _wal_hook(self, conn: apsw.Connection, name: str, pages: int) -> int:
        self._wal_pages = pages
        self._wal_commits += 1
        return apsw.SQLITE_OK

    def _periodic_checkpoint(self) -> None:
        """Move the WAL into the database file (PASSIVE: never waits for readers). The history
        is fsynced first, so a page reaches the database file only once its record is durable."""
        if not self._ckpt_idle.is_set():
            return  # one is running; the WAL keeps growing until it is done
        self._wal_pages = 0
        history = self.history
        if self.offload is None:
            if history is not None:
                history.sync()
            self.checkpoint(passive=True)
            return
        sync_history = history.sync_later() if history is not None else None
        checkpoint_on_worker(self.path, sync_history, self._ckpt_idle, self.offload)
