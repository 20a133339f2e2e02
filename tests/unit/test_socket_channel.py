"""SocketChannel: frames leave in order, after their sender's output gate, with or without
back-pressure from the transport; a failed gate drops only the frame it guarded."""

import asyncio

from duro.errors import ObjectResetError
from duro.runtime.sockets import CLOSED, OPEN, SocketChannel


class Transport:
    def __init__(self):
        self.sent = []
        self.block: asyncio.Event | None = None  # when set: every send waits for it (back-pressure)
        self.fail = False

    async def _maybe_wait(self):
        if self.block is not None:
            await self.block.wait()
        if self.fail:
            raise OSError("connection lost")

    async def send_text(self, data):
        await self._maybe_wait()
        self.sent.append(data)

    async def send_bytes(self, data):
        await self._maybe_wait()
        self.sent.append(data)

    async def close(self, code, reason):
        await self._maybe_wait()
        self.sent.append(("close", code, reason))


class Gate:
    """Stands in for an Activation's output gate."""

    def __init__(self):
        self.pending: asyncio.Future | None = None

    def output_open(self):
        return self.pending is None or self.pending.done()

    async def output_gate(self):
        if self.pending is not None:
            await self.pending


async def settle():
    for _ in range(20):
        await asyncio.sleep(0)


async def test_fast_path_sends_at_once_in_order():
    ch, t = SocketChannel(), Transport()
    ch.send("queued-before-attach", None)
    assert t.sent == []
    ch.attach(t)
    await settle()
    assert ch.ready_state == OPEN
    ch.send("a", None)
    ch.send(b"b", Gate())
    assert t.sent == ["queued-before-attach", "a", b"b"], "no task needed when nothing waits"
    ch.close(1000, "done", None)
    assert t.sent[-1] == ("close", 1000, "done")


async def test_back_pressure_keeps_order():
    ch, t = SocketChannel(), Transport()
    ch.attach(t)
    t.block = asyncio.Event()
    ch.send("1", None)
    ch.send("2", None)
    ch.send("3", None)
    await settle()
    assert t.sent == []
    t.block.set()
    await settle()
    assert t.sent == ["1", "2", "3"]
    ch.send("4", None)
    assert t.sent == ["1", "2", "3", "4"]


async def test_frames_wait_for_their_gate_and_later_frames_queue_behind():
    ch, t, gate = SocketChannel(), Transport(), Gate()
    ch.attach(t)
    gate.pending = asyncio.get_running_loop().create_future()
    ch.send("after-write", gate)
    ch.send("no-gate", None)
    await settle()
    assert t.sent == [], "a frame after an undurable write must wait, and so must frames after it"
    gate.pending.set_result(None)
    await settle()
    assert t.sent == ["after-write", "no-gate"]


async def test_failed_gate_drops_only_its_frame():
    ch, t = SocketChannel(), Transport()
    ch.attach(t)

    class Broken(Gate):
        def output_open(self):
            return False

        async def output_gate(self):
            raise ObjectResetError("commit failed")

    ch.send("lost", Broken())
    ch.send("kept", None)
    await settle()
    assert t.sent == ["kept"]


async def test_dead_transport_and_detach():
    ch, t = SocketChannel(), Transport()
    ch.attach(t)
    t.fail = True
    ch.send("x", None)
    ch.send("y", None)  # dropped: the connection is gone
    await settle()
    assert t.sent == []
    t.fail = False
    t.block = asyncio.Event()
    ch2 = SocketChannel()
    ch2.attach(t)
    ch2.send("stuck", None)
    await settle()
    await asyncio.wait_for(ch2.detach(), 1)
    assert ch2.ready_state == CLOSED
    assert t.sent == [], "detach drops what could not be sent"
