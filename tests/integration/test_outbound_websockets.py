"""Outbound WebSockets in-process, against a real `websockets` server on 127.0.0.1 in the same
loop: a message sent after a write waits at the output gate for the write to be durable; the
socket pins its object; the errors Cloudflare gives for misuse."""

import asyncio
import pathlib
import time

import pytest
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed

from duro import WebSocket
from duro.api.outbound import ClientWebSocket
from duro.api.websocket import WebSocketStateError
from duro.errors import InvalidInputError
from duro.testing import HeldBarrier, LocalApp

PROJECT = pathlib.Path(__file__).resolve().parents[1] / "e2e" / "projects" / "outbound"


async def poll(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)
    return value


@pytest.fixture
async def peer():
    received = []

    async def handler(conn):
        try:
            async for msg in conn:
                received.append(msg)
        except ConnectionClosed:
            pass

    async with ws_serve(handler, "127.0.0.1", 0) as server:
        server.received = received
        server.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        yield server


@pytest.fixture
async def app(tmp_path):
    async with LocalApp(PROJECT, tmp_path / "data") as app:
        yield app


async def events(app, name):
    return await app.env.CLIENT.get_by_name(name).events()


async def test_a_message_sent_after_a_write_leaves_once_the_write_is_durable(app, peer):
    stub = app.env.CLIENT.get_by_name("gate")
    await stub.open_new(peer.url)
    deadline = time.monotonic() + 10
    while [k for k, _ in await events(app, "gate")] != ["open"]:
        assert time.monotonic() < deadline, "the socket never opened"
        await asyncio.sleep(0.01)
    barrier = HeldBarrier()
    app.runtime.barrier = barrier
    send = asyncio.ensure_future(stub.send("after the write", True))
    await poll(lambda: barrier.held)
    await asyncio.sleep(0.2)  # a window in which the message would have left if it were not held
    assert peer.received == [], "the message left before the write was durable"
    barrier.release_all()
    await send
    await poll(lambda: peer.received == ["after the write"])


async def test_the_socket_pins_its_object_while_open(app, peer):
    stub = app.env.CLIENT.get_by_name("pin")
    await stub.open_new(peer.url)
    act = app.runtime.find(app.env.CLIENT.unique_key, str(app.env.CLIENT.id_from_name("pin")))
    assert any(p.startswith("outbound-websocket:") for p in act.pins)
    assert not act.is_idle
    await stub.close()
    await poll(lambda: not act.pins)
    assert act.is_idle


async def test_misuse_gets_cloudflare_errors(app, peer):
    entered = []

    async def in_object(instance):
        ws = WebSocket.new(peer.url)
        assert isinstance(ws, ClientWebSocket) and isinstance(ws, WebSocket)
        assert ws.url == peer.url and ws.readyState == WebSocket.CONNECTING
        with pytest.raises(WebSocketStateError, match="You must call one of accept"):
            ws.send("too early")
        with pytest.raises(WebSocketStateError, match="cannot call accept"):
            ws.accept()
        ws.close()  # before it connected: the attempt is dropped, no event
        assert ws.readyState == WebSocket.CLOSED
        for bad, words in [("http://127.0.0.1:1/", "The url scheme must be ws or wss."),
                           ("ws://127.0.0.1:1/#x", "The url fragment must be empty.")]:
            with pytest.raises(InvalidInputError, match=words):
                WebSocket.new(bad)
        with pytest.raises(InvalidInputError, match="repeating values"):
            WebSocket.new(peer.url, ["chat", "chat"])
        entered.append(True)

    act = app.runtime.activation(app.env.CLIENT.unique_key, app.env.CLIENT.id_from_name("misuse"))
    await act.run(in_object)
    assert entered
    await poll(lambda: not act.pins)


async def test_outside_any_request_it_is_refused():
    with pytest.raises(WebSocketStateError, match="needs a running duro app"):
        WebSocket.new("ws://127.0.0.1:1/")
