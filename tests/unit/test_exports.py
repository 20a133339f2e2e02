"""Public names are pinned: adding, removing or renaming one is a deliberate, visible change (each
``__all__`` is compared with ``==``, so a new name fails here until it is added on purpose)."""

import duro
import duro.compat.asgi as asgi
import duro.compat.js as js
import duro.compat.pyodide_ffi as pyodide_ffi
import duro.compat.workers as workers
import duro.errors
import duro.testing
import duro.testing.websocket


def _all_resolve(module):
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == [], f"{module.__name__}.__all__ names what it does not define: {missing}"


def test_top_level_exports():
    assert set(duro.__all__) == {
        "DurableObject", "WorkerEntrypoint", "Request", "Response", "FetchResponse", "Headers",
        "DurableObjectId", "DurableObjectNamespace", "DurableObjectStub", "DurableObjectState",
        "DurableObjectStorage", "DurableObjectSnapshot", "AlarmInvocationInfo", "WebSocket", "WebSocketPair",
        "WebSocketRequestResponsePair", "DuroError", "DurableObjectAbort", "ObjectResetError",
        "OverloadedError", "RemoteError", "__version__",
    }
    assert len(duro.__all__) == len(set(duro.__all__))
    _all_resolve(duro)


def test_error_exports():
    assert set(duro.errors.__all__) == {
        "DuroError", "InvalidInputError", "InvalidIdError", "ConfigError", "StorageError", "SqlError",
        "StorageLimitError", "CorruptDatabaseError", "GateBrokenError", "ObjectResetError",
        "DurableObjectAbort", "CpuLimitExceeded", "OverloadedError", "RemoteError", "InternalError", "UnknownNamespaceError",
        "mark_remote", "JsException", "UnsupportedBindingError",
    }
    _all_resolve(duro.errors)
    for name in ("DuroError", "DurableObjectAbort", "ObjectResetError", "OverloadedError", "RemoteError"):
        assert getattr(duro, name) is getattr(duro.errors, name)


def test_testing_exports():
    assert set(duro.testing.__all__) == {"HeldBarrier", "LocalApp", "ServerProcess", "free_port", "wait_for",
                                          "worker_pids"}
    assert set(duro.testing.websocket.__all__) == {"LocalWebSocket", "WebSocketClosed", "WebSocketRefused"}
    _all_resolve(duro.testing)
    _all_resolve(duro.testing.websocket)


def test_workers_shim_exports():
    assert set(workers.__all__) == {
        "DurableObject", "WorkerEntrypoint", "WorkflowEntrypoint", "Request", "Response", "FetchResponse",
        "env", "fetch", "handler", "python_from_rpc", "python_to_rpc", "wait_until", "waitUntil",
    }
    _all_resolve(workers)
    assert workers.DurableObject is duro.DurableObject


def test_js_and_pyodide_shim_exports():
    assert set(js.__all__) == {
        "Array", "Date", "Error", "Headers", "JSON", "Math", "Object", "Promise", "Request", "Response", "TextDecoder",
        "TextEncoder", "URL", "URLSearchParams", "Uint8Array", "WebSocket", "WebSocketPair",
        "WebSocketRequestResponsePair", "atob", "btoa", "clearTimeout", "console", "crypto", "decodeURIComponent",
        "encodeURIComponent", "fetch", "globalThis", "performance", "setTimeout", "undefined"}
    assert set(pyodide_ffi.__all__) == {
        "IN_BROWSER", "JsArray", "JsAsyncGenerator", "JsAsyncIterable", "JsAsyncIterator", "JsBuffer", "JsCallable",
        "JsDoubleProxy", "JsException", "JsFetchResponse", "JsGenerator", "JsIterable", "JsIterator", "JsMap",
        "JsMutableMap", "JsPromise", "JsProxy", "JsTypedArray", "can_run_sync", "create_once_callable",
        "create_proxy", "destroy_proxies", "jsnull", "run_sync", "to_js"}
    _all_resolve(js)
    _all_resolve(pyodide_ffi)


def test_websocket_names():
    from duro.api.objects import DurableObjectState
    for name in ("WebSocket", "WebSocketPair", "WebSocketRequestResponsePair"):
        assert name in duro.__all__ and getattr(js, name) is getattr(duro, name)
    for snake, camel in [("accept_websocket", "acceptWebSocket"), ("get_websockets", "getWebSockets"),
                         ("get_tags", "getTags"), ("set_websocket_auto_response", "setWebSocketAutoResponse"),
                         ("get_websocket_auto_response", "getWebSocketAutoResponse"),
                         ("get_websocket_auto_response_timestamp", "getWebSocketAutoResponseTimestamp"),
                         ("set_hibernatable_websocket_event_timeout", "setHibernatableWebSocketEventTimeout"),
                         ("get_hibernatable_websocket_event_timeout", "getHibernatableWebSocketEventTimeout")]:
        assert getattr(DurableObjectState, snake) is getattr(DurableObjectState, camel)
    for snake, camel in [("serialize_attachment", "serializeAttachment"),
                         ("deserialize_attachment", "deserializeAttachment"),
                         ("add_event_listener", "addEventListener"), ("ready_state", "readyState")]:
        assert getattr(duro.WebSocket, snake) is getattr(duro.WebSocket, camel)


def test_asgi_shim_exports():
    assert set(asgi.__all__) == {"ASGI", "fetch", "websocket", "request_to_scope"}
    _all_resolve(asgi)


def test_cluster_exports():
    import pytest

    pytest.importorskip("nats", reason="the cluster extra (nats-py) is not installed")
    import duro.cluster.journal as journal
    import duro.cluster.leases as leases
    import duro.cluster.testing as testing

    assert set(leases.__all__) == {
        "LeaseOptions", "Lease", "NodeRegistry", "Leases", "LeaseHeldError", "SelfFencedError",
        "NodeNameTakenError", "ClusterUnavailableError", "object_key", "NODES_BUCKET", "OWNERS_BUCKET",
    }
    assert set(journal.__all__) == {"JetStreamJournal", "ObjectLog", "FencedError", "ChainBrokenError", "STREAM",
                                    "SNAP_BUCKET"}
    assert set(testing.__all__) == {"NatsServers", "nats_server_binary", "MIN_VERSION"}
    for module in (leases, journal, testing):
        _all_resolve(module)
