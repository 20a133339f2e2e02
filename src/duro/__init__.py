"""duro: Durable Objects for Python, self-hosted.

Write a class, run ``duro dev``::

    from duro import DurableObject, WorkerEntrypoint, Response

    class Counter(DurableObject):
        async def increment(self) -> int: ...
"""

from .api import (
    DurableObject,
    DurableObjectNamespace,
    DurableObjectSnapshot,
    DurableObjectState,
    DurableObjectStorage,
    DurableObjectStub,
    FetchResponse,
    Headers,
    Request,
    Response,
    WebSocket,
    WebSocketPair,
    WebSocketRequestResponsePair,
    WorkerEntrypoint,
)
from .core.alarms import AlarmInvocationInfo
from .errors import DuroError, DurableObjectAbort, ObjectResetError, OverloadedError, RemoteError
from .ids import DurableObjectId

__version__ = "0.1.0"

__all__ = [
    "AlarmInvocationInfo", "DurableObject", "DurableObjectId", "DurableObjectNamespace", "DurableObjectSnapshot",
    "DurableObjectState",
    "DurableObjectStorage", "DurableObjectStub", "DuroError", "DurableObjectAbort", "FetchResponse",
    "Headers", "ObjectResetError", "OverloadedError", "RemoteError", "Request", "Response",
    "WebSocket", "WebSocketPair", "WebSocketRequestResponsePair", "WorkerEntrypoint", "__version__",
]
