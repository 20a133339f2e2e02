"""Public names are pinned: removing or renaming one is a deliberate, visible change."""

import duro
import duro.compat.workers as workers


def test_top_level_exports():
    assert set(duro.__all__) >= {
        "DurableObject", "WorkerEntrypoint", "Request", "Response", "DurableObjectId",
        "DurableObjectNamespace", "DurableObjectStub", "DurableObjectState", "DurableObjectStorage",
        "DuroError", "DurableObjectAbort", "ObjectResetError", "OverloadedError", "RemoteError",
    }
    for name in duro.__all__:
        assert getattr(duro, name) is not None


def test_workers_shim_exports():
    for name in ("DurableObject", "WorkerEntrypoint", "Request", "Response", "FetchResponse", "fetch"):
        assert hasattr(workers, name)
    assert workers.DurableObject is duro.DurableObject


def test_websocket_names():
    import duro.compat.js as js
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
