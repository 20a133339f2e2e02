"""One Durable Object's storage, synchronous: its SQLite database, the KV table, the SQL API and
its authorizer, the alarm row. See :class:`ObjectDatabase`.

Nothing here uses asyncio or threads; the runtime calls these methods on its event loop and owns
commit scheduling and durability.
"""

from duro.storage.database import EMPTY_DATABASE_SIZE, ObjectDatabase
from duro.storage.kv import KV_LIST_INVALIDATED_MESSAGE, SyncKv
from duro.storage.sql import RawCursor, Row, SqlCursor, SqlStorage

__all__ = [
    "ObjectDatabase",
    "SqlStorage",
    "SqlCursor",
    "RawCursor",
    "Row",
    "SyncKv",
    "EMPTY_DATABASE_SIZE",
    "KV_LIST_INVALIDATED_MESSAGE",
]
