"""WebSockets through the real front, in-process: hibernation (constructor calls counted), auto-
responses, standard sockets, the output gate, close/error events and the API's limits and texts."""

import asyncio
import json
import pathlib
import sys
import time

import pytest

from duro.runtime import DurabilityBarrier
from duro.testing import HeldBarrier, LocalApp
from duro.testing.websocket import WebSocketClosed, WebSocketRefused

PROJECT = pathlib.Path(__file__).parent / "projects" / "sockets"


@pytest.fixture
async def app(tmp_path):
    async with LocalApp(PROJECT, tmp_path / "data") as app:
        mod = sys.modules["app"]
        mod.CONSTRUCTED.clear()
        mod.EVENTS.clear()
        app.mod = mod
        yield app


def hibernate(app):
    """Run the sweeper as if the hibernation timeout had passed."""
    rt = app.runtime
    return rt.sweep(now=time.monotonic() + rt.limits.hibernation_timeout + 0.01)


async def poll(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.005)


async def test_messages_in_order_and_welcome_first(app):
    ws = await app.websocket("/room/order")
    assert await ws.receive() == "welcome"
    for i in range(50):
        await ws.send(f"echo:{i}")
    assert [await ws.receive() for _ in range(50)] == [str(i) for i in range(50)]
    await ws.send(b"\x00\xff")
    assert await ws.receive() == b"bin:\x00\xff"
    await ws.close()


async def test_hibernation_drops_instance_and_keeps_sockets_tags_attachments(app):
    a = await app.websocket("/room/h?red&blue")
    b = await app.websocket("/room/h?blue")
    assert await a.receive() == "welcome" and await b.receive() == "welcome"
    await a.send("attach:alice")
    assert await a.receive() == "ok"
    assert app.mod.CONSTRUCTED["h"] == 1

    assert hibernate(app) == 1
    assert app.runtime.find(app.env.ROOM.unique_key, str(app.env.ROOM.id_from_name("h"))) is None

    await a.send("tags")  # wakes the object: the constructor runs again
    assert json.loads(await a.receive()) == ["red", "blue"]
    assert app.mod.CONSTRUCTED["h"] == 2
    await a.send("attachment")
    assert json.loads(await a.receive()) == {"value": "alice"}
    await b.send("attachment")
    assert json.loads(await b.receive()) == {"joined": 2}
    await b.send("count")
    assert await b.receive() == "2"
    await b.send("count:red")
    assert await b.receive() == "1"
    await b.send("same")  # one socket is one Python object within an instance
    assert await b.receive() == "True"
    await b.send("broadcast:blue")
    assert await a.receive() == "from-broadcast" and await b.receive() == "from-broadcast"
    assert app.mod.CONSTRUCTED["h"] == 2

    # Again: storage survives too.
    await a.send("write:x")
    assert await a.receive() == "written"
    assert hibernate(app) == 1
    await b.send("rows")
    assert await b.receive() == "1"
    assert app.mod.CONSTRUCTED["h"] == 3
    await a.close()
    await b.close()


async def test_auto_response_does_not_wake_the_object(app):
    ws = await app.websocket("/room/auto?auto")
    assert await ws.receive() == "welcome"
    assert hibernate(app) == 1
    for _ in range(3):
        await ws.send("ping")
        assert await ws.receive() == "pong"
    assert app.mod.CONSTRUCTED["auto"] == 1, "auto-responses must not run the constructor"
    await ws.send("autots")
    assert await ws.receive() == "set"
    assert app.mod.CONSTRUCTED["auto"] == 2
    await ws.send("pingx")  # not the exact request text: delivered to the object
    await ws.send("echo:after")
    assert await ws.receive() == "after"
    await ws.close()


async def test_standard_socket_pins_its_instance(app):
    ws = await app.websocket("/plain/p")
    await ws.send("a")
    assert await ws.receive() == "a#1"
    rt = app.runtime
    assert rt.sweep(now=time.monotonic() + rt.limits.idle_timeout + 100) == 0
    await ws.send("b")
    assert await ws.receive() == "b#2", "in-memory state kept: the instance was not evicted"
    assert app.mod.CONSTRUCTED["p"] == 1
    await ws.close(1000, "done")
    await poll(lambda: ["plain-close", 1000, "done", True] in app.mod.EVENTS)
    assert rt.sweep(now=time.monotonic() + rt.limits.idle_timeout + 100) == 1, "unpinned after close"


async def test_standard_socket_closed_on_reset(app):
    ws = await app.websocket("/plain/r")
    await ws.send("abort")
    with pytest.raises(WebSocketClosed) as info:
        await ws.receive()
    assert info.value.code == 1011


async def test_socket_accepted_by_entrypoint(app):
    ws = await app.websocket("/worker")
    await ws.send("hi")
    assert await ws.receive() == "worker:hi"
    await ws.close()




async def test_message_after_write_waits_for_durability(app):
    ws = await app.websocket("/room/gate")
    assert await ws.receive() == "welcome"
    barrier = HeldBarrier()
    app.runtime.barrier = barrier
    await ws.send("write:a")
    await poll(lambda: barrier.held)
    for _ in range(50):
        await asyncio.sleep(0)
    assert ws.pending() == 0, "the message left before the write was durable"
    barrier.release_all()
    assert await ws.receive() == "written"
    await ws.close()


async def test_failed_durability_drops_the_message_and_keeps_the_socket(app):
    ws = await app.websocket("/room/gatefail")
    assert await ws.receive() == "welcome"
    barrier = HeldBarrier()
    app.runtime.barrier = barrier
    await ws.send("write:lost")
    await poll(lambda: barrier.held)
    barrier.held[-1].set_exception(OSError("EIO"))
    app.runtime.barrier = DurabilityBarrier("os")
    await ws.send("echo:still-open")
    assert await ws.receive() == "still-open", "'written' must never arrive: its write was not durable"
    await ws.close()


async def test_close_events(app):
    a = await app.websocket("/room/c")
    b = await app.websocket("/room/c")
    c = await app.websocket("/room/c")
    for w in (a, b, c):
        assert await w.receive() == "welcome"
    await a.close(4001, "see you")
    assert await b.receive() == "left:4001"
    await c.drop()
    assert await b.receive() == "left:1006"
    events = app.mod.EVENTS
    assert ["close", "c", 4001, "see you", True] in events
    assert ["close", "c", 1006, "WebSocket disconnected without sending Close frame.", False] in events
    await b.send("count")
    assert await b.receive() == "1"
    await b.send("close")
    with pytest.raises(WebSocketClosed) as info:
        await b.receive()
    assert (info.value.code, info.value.reason) == (4000, "bye")
    await b.wait_closed()
    assert len([e for e in events if e[0] == "close"]) == 2, "a server-initiated close fires no event"


async def test_handler_error_and_abort_leave_the_socket_open(app):
    ws = await app.websocket("/room/err")
    assert await ws.receive() == "welcome"
    await ws.send("boom")
    await ws.send("echo:alive")
    assert await ws.receive() == "alive"
    await ws.send("abort")
    await ws.send("echo:after-abort")
    assert await ws.receive() == "after-abort"
    assert app.mod.CONSTRUCTED["err"] == 2, "the reset instance was rebuilt"
    await ws.close()


async def test_event_timeout(app):
    ws = await app.websocket("/room/slow")
    assert await ws.receive() == "welcome"
    await ws.send("timeout:50")
    assert await ws.receive() == "50"
    await ws.send("sleep:2")
    await ws.send("echo:next")
    assert await ws.receive() == "next", "the slow event was cut off at 50 ms"
    await ws.close()


async def test_refused_upgrade_gets_the_http_response(app):
    with pytest.raises(WebSocketRefused) as info:
        await app.websocket("/nope")
    assert info.value.status == 404 and info.value.body == b"not found"


async def test_api_limits_and_texts(app):
    out = await app.env.ROOM.get_by_name("limits").check_limits()
    assert out["send_before_accept"] == ["WebSocketStateError",
                                         "You must call one of accept() or state.acceptWebSocket() on this "
                                         "WebSocket before sending messages."]
    assert out["too_many_tags"] == ["InvalidInputError", "a Hibernatable WebSocket cannot have more than 10 tags"]
    assert out["ten_tags_with_duplicates"] is None
    assert out["long_tag"] == ["InvalidInputError", f'"{"x" * 257}" is longer than the max tag length (256 characters).']
    assert out["accept_after_accept"] == ["WebSocketStateError", "Cannot call `acceptWebSocket()` if the WebSocket "
                                          "was already accepted via `accept()`"]
    assert out["get_tags_standard"][0] == "WebSocketStateError"
    assert out["attachment_limit_ok"] is None
    kind, text = out["attachment_too_large"]
    assert kind == "InvalidInputError"
    assert text.startswith("A WebSocket 'attachment' cannot be larger than 16384 bytes.'attachment' was 1638")
    assert out["auto_request_too_large"] == ["InvalidInputError", "Request cannot be larger than 2048 bytes. "
                                             "A request of size 2049 was provided."]
    assert out["auto_response_too_large"] == ["InvalidInputError", "Response cannot be larger than 2048 bytes. "
                                              "A response of size 2049 was provided."]
    assert out["event_timeout"] == ["InvalidInputError", "Event timeout should not exceed 604800000 ms."]
    assert out["send_after_close"] == ["WebSocketStateError", "Can't call WebSocket send() after close()."]
    assert out["close_code_1006"][0] == "InvalidInputError"
    assert out["client_end_send"][0] == "WebSocketStateError"


async def test_at_most_32768_sockets_per_object(app):
    refused = await app.env.ROOM.get_by_name("full").fill(32769)
    assert refused == [32768, "OverloadedError",
                       "only 32768 websockets can be accepted on a single Durable Object instance"]
    # None of them was ever returned in a 101 response: the sweeper drops them after 30 s.
    assert app.runtime.hibernation.statistics()["sockets"] == 32768
    app.runtime.sweep(now=time.monotonic() + 31)
    assert app.runtime.hibernation.statistics()["sockets"] == 0


async def test_cloudflare_spellings(app):
    from duro.compat import js
    client, server = js.WebSocketPair.new().object_values()
    assert client.ready_state == 0 and server.readyState == 0
    pair = js.WebSocketPair.new()
    c2, s2 = pair
    assert pair[0] is c2 and pair[1] is s2
    rr = js.WebSocketRequestResponsePair("a", "b")
    assert (rr.request, rr.response, rr.getRequest(), rr.getResponse()) == ("a", "b", "a", "b")


async def test_failed_durability_drops_a_close_and_the_socket_can_still_be_closed(app):
    # A close held behind a write that never became durable is discarded like any held output;
    # the socket must stay usable, so the next instance can close it (or send on it).
    ws = await app.websocket("/room/closefail")
    assert await ws.receive() == "welcome"
    barrier = HeldBarrier()
    app.runtime.barrier = barrier
    await ws.send("writeclose:lost")
    await poll(lambda: barrier.held)
    barrier.held[-1].set_exception(OSError("EIO"))
    app.runtime.barrier = DurabilityBarrier("os")
    await ws.send("echo:still-open")
    assert await ws.receive() == "still-open"
    await ws.send("close")
    with pytest.raises(WebSocketClosed) as info:
        await ws.receive()
    assert info.value.code == 4000


async def test_failed_durability_before_a_close_still_closes_a_standard_socket(app):
    ws = await app.websocket("/plain/closefail")
    barrier = HeldBarrier()
    app.runtime.barrier = barrier
    await ws.send("writeclose")
    await poll(lambda: barrier.held)
    barrier.held[-1].set_exception(OSError("EIO"))
    app.runtime.barrier = DurabilityBarrier("os")
    with pytest.raises(WebSocketClosed) as info:
        await ws.receive()
    assert info.value.code == 1011  # the reset closes it; the held 4001 is discarded
