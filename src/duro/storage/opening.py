"""Opening one object's SQLite file: the flags, the limits, defensive mode, the setup pragmas, the
full-disk fallback, telling a damaged file apart, and the empty-database template a journaled
object starts from.

It owns no connection once it has handed one back (``storage/connection.py`` does), and it must
never: fsync anything (a journaled object's new file is redone from the journal; SQLite syncs the
rest), run an object's statements, or let an apsw exception out untranslated.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pathlib

import apsw

from duro.errors import StorageError
from duro.storage.paths import file_mode
from duro.storage.translate import CORRUPT_CODES, corrupt_error, translate

__all__ = ["connect", "create_empty", "wal_descriptor", "PAGE_SIZE", "MAX_DATABASE_BYTES"]

PAGE_SIZE = 4096
MAX_DATABASE_BYTES = 10 * 1000**3  # 10 GB per object (§7.4); beyond it writes fail with SQLITE_FULL
_STATEMENT_CACHE = 128
_log = logging.getLogger("duro.storage")

# SQLite limits (reference §3.5, §7.4). SQLITE_LIMIT_LENGTH caps a string, a blob and a whole row,
# which is Cloudflare's documented 2 MB key+value / row limit.
_LIMITS = (
    (apsw.SQLITE_LIMIT_LENGTH, 2_000_000),
    (apsw.SQLITE_LIMIT_SQL_LENGTH, 100_000),
    (apsw.SQLITE_LIMIT_COLUMN, 100),
    (apsw.SQLITE_LIMIT_EXPR_DEPTH, 100),
    (apsw.SQLITE_LIMIT_COMPOUND_SELECT, 5),
    (apsw.SQLITE_LIMIT_VDBE_OP, 25_000),
    (apsw.SQLITE_LIMIT_FUNCTION_ARG, 127),  # what workerd sets; the docs say 32
    (apsw.SQLITE_LIMIT_LIKE_PATTERN_LENGTH, 50),
    (apsw.SQLITE_LIMIT_VARIABLE_NUMBER, 100),
    (apsw.SQLITE_LIMIT_TRIGGER_DEPTH, 10),
    (apsw.SQLITE_LIMIT_ATTACHED, 0),
    (apsw.SQLITE_LIMIT_WORKER_THREADS, 0),
)

# synchronous=NORMAL: a commit writes the WAL without fsyncing it (the runtime's barrier fdatasyncs
# the WAL of every commit, batched); checkpoints, and the WAL header when the WAL starts over, are
# synced by SQLite. The header sync must stay: turning SQLite's syncs off (measured faster to open)
# lets a power loss after a WAL restart replay stale, already checkpointed frames over newer pages
# (SQLite ticket ff5be73dee).
_SETUP = (
    f"PRAGMA page_size={PAGE_SIZE};"
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "PRAGMA foreign_keys=ON;"
    f"PRAGMA max_page_count={MAX_DATABASE_BYTES // PAGE_SIZE};"
    "PRAGMA schema_version;"  # reads the schema: a damaged or foreign file fails here
)

# With a node journal (JournalLink) the journal is the durability source: SQLite syncs nothing
# (no fsync on the commit path, none for a new file or a WAL restart). Stale WAL frames after a
# power cut cannot be replayed: recovery removes every WAL left by an unclean stop.
_SETUP_JOURNALED = _SETUP.replace("PRAGMA synchronous=NORMAL;", "PRAGMA synchronous=OFF;")

# A journaled object's connection is the only one that ever writes its file (the data directory's
# lock keeps one server; each object has one owner; checkpoints and the close run on that same
# connection), so it takes no locks: SQLite's "unix-none" VFS, in exclusive locking mode, with the
# WAL index in its own memory (no -shm file). SQLite's POSIX locking keeps one list of every open
# file's inode per process and walks it at every open (findInodeInfo, findReusableFd): with
# thousands of open objects that walk was most of the cost of waking an object (208 µs per open
# with 2,000 open, 60 µs without locking; bench/cold.py: 986 → 682 µs of CPU per wake). Readers
# from outside (the dashboard, `duro objects`) get no lock to hold either: maintenance.py's
# _read_consistently checks that the file did not change and the WAL did not start over while
# they read, and reads again if it did.
_JOURNALED_VFS = "unix-none"


def _empty_wal_database() -> bytes:
    """Page 1 of an empty database already in WAL mode. A new journaled database starts as this
    file, so SQLite never makes (and removes) a rollback journal to switch it to WAL."""
    mem = apsw.Connection(":memory:")
    try:
        mem.execute(f"PRAGMA page_size={PAGE_SIZE}; CREATE TABLE x(a); DROP TABLE x; VACUUM;")
        page = bytearray(mem.serialize("main"))
    finally:
        mem.close()
    page[18] = page[19] = 2  # file format read/write version 2: WAL
    return bytes(page)


_EMPTY_WAL_DATABASE = _empty_wal_database()

# Opening the WAL index (the -shm file) failed: the disk has no room for it.
_SHM_FAILURES = (apsw.SQLITE_IOERR_SHMOPEN, apsw.SQLITE_IOERR_SHMSIZE, apsw.SQLITE_IOERR_SHMMAP)

_PERSIST_ON = ctypes.c_int(1)  # SQLite reads the int behind the pointer (it writes only for -1)


def _set_up(conn: apsw.Connection, *, journaled: bool, exclusive: bool = False) -> None:
    """Configure a fresh connection to an object's database: the WAL kept across closes (emptied:
    ``closing.py`` sets ``journal_size_limit=0`` before the close), defensive mode, the limits,
    then the setup pragmas (``exclusive``: the WAL index in this process's memory, no -shm file)."""
    # Keep the -wal file when the connection closes: creating it again at every open (and
    # removing it at every close) was the largest part of waking an object after the locking
    # (bench/cold.py: 767 -> 465 us of CPU per wake). At rest it is empty: a file, no data. After
    # an unclean stop the journal's recovery removes every -wal (stale frames must not replay).
    conn.file_control("main", apsw.SQLITE_FCNTL_PERSIST_WAL, ctypes.addressof(_PERSIST_ON))
    conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
    for limit, value in _LIMITS:
        conn.limit(limit, value)
    if exclusive:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE", can_cache=False).fetchall()
    # Once per open: kept out of the statement cache, whose statements each object keeps in memory.
    conn.execute(_SETUP_JOURNALED if journaled else _SETUP, can_cache=False).fetchall()


def connect(path: pathlib.Path, *, create: bool, journaled: bool) -> apsw.Connection | None:
    """A configured connection to the database at ``path`` (created if missing and ``create``);
    None if ``create`` is False and the file is missing. A damaged file raises
    CorruptDatabaseError; any other failure StorageError (or SqlError, translated from SQLite)."""
    flags = apsw.SQLITE_OPEN_READWRITE | (apsw.SQLITE_OPEN_CREATE if create else 0)
    try:
        conn = apsw.Connection(str(path), flags=flags, statementcachesize=_STATEMENT_CACHE,
                               vfs=_JOURNALED_VFS if journaled else None)
    except apsw.CantOpenError as e:
        if not create and not path.exists():
            return None
        raise StorageError(f"cannot open database file {str(path)!r}: {e}") from e
    try:
        try:
            _set_up(conn, journaled=journaled, exclusive=journaled)  # journaled: no -shm file at all
        except apsw.IOError as e:
            if journaled or getattr(e, "extendedresult", None) not in _SHM_FAILURES:
                raise
            # No room for the -shm file (a full disk): keep the WAL index in this process's
            # memory instead (exclusive locking), so the object can still be read. Its
            # writes fail with SQLite's "database or disk is full" until there is room.
            _log.warning("%s: no room for its -shm file (%s); opened with exclusive locking", path, e)
            conn.close()
            conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE,
                                   statementcachesize=_STATEMENT_CACHE)
            _set_up(conn, journaled=journaled, exclusive=True)
    except apsw.Error as e:
        conn.close()
        if getattr(e, "result", None) in CORRUPT_CODES:
            raise corrupt_error(path, e) from e
        raise translate(e) from e
    return conn


def create_empty(path: pathlib.Path) -> None:
    """Create the file as an empty database in WAL mode (no fsync: the journal redoes it). A file
    already there is left as it is."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, file_mode())
    except FileExistsError:
        return
    except OSError as e:
        raise StorageError(f"cannot create database file {str(path)!r}: {e.strerror or e}") from e
    try:
        os.write(fd, _EMPTY_WAL_DATABASE)
    except OSError as e:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise StorageError(f"cannot create database file {str(path)!r}: {e.strerror or e}") from e
    os.close(fd)


# SQLite's unix VFS file object starts {pMethods, pVfs, pInode, int h}: ``h`` is the descriptor
# (sqlite3's os_unix.c, unchanged since 3.7). Read only after checking it is the -wal's own inode.
_UNIX_FILE_FD_OFFSET = 3 * ctypes.sizeof(ctypes.c_void_p)


def wal_descriptor(conn: apsw.Connection, wal_path: pathlib.Path) -> int:
    """The descriptor SQLite holds open for the connection's WAL (``SQLITE_FCNTL_JOURNAL_POINTER``),
    valid until the connection closes; -1 if it cannot be had (no WAL open yet, another VFS, or
    the descriptor is not ``wal_path``'s file). Whoever uses it must never close it, and must stop
    using it before the connection closes. SQLite closes a WAL's descriptor only when the connection
    closes or leaves WAL mode, and user SQL cannot change the journal mode (the authorizer)."""
    ptr = ctypes.c_void_p(0)
    try:
        conn.file_control("main", apsw.SQLITE_FCNTL_JOURNAL_POINTER, ctypes.addressof(ptr))
        if not ptr.value or not ctypes.c_void_p.from_address(ptr.value).value:  # none, or not open
            return -1
        fd = ctypes.c_int.from_address(ptr.value + _UNIX_FILE_FD_OFFSET).value
        if fd < 0:
            return -1
        held, named = os.fstat(fd), os.stat(wal_path)
    except (apsw.Error, OSError):
        return -1
    if (held.st_dev, held.st_ino) != (named.st_dev, named.st_ino):
        return -1
    return fd
