"""The user surface: ``DurableObject``, ``WorkerEntrypoint``, ``ctx``, namespaces and stubs,
``Request`` / ``Response``. Imports the runtime; never the http layer."""

from .app import App, Env, ObjectClass
from .fetch import FetchResponse, Headers, Request, Response
from .namespace import DurableObjectNamespace, DurableObjectStub
from .objects import DurableObject, DurableObjectState, ExecutionContext, WorkerEntrypoint
from .snapshots import DurableObjectSnapshot
from .storage import DurableObjectStorage, JsDict
from .websocket import WebSocket, WebSocketPair, WebSocketRequestResponsePair

__all__ = [
    "App", "DurableObject", "DurableObjectNamespace", "DurableObjectState", "DurableObjectStorage",
    "DurableObjectSnapshot", "DurableObjectStub", "Env", "ExecutionContext", "FetchResponse", "Headers", "JsDict",
    "ObjectClass",
    "Request", "Response", "WebSocket", "WebSocketPair", "WebSocketRequestResponsePair", "WorkerEntrypoint",
]
