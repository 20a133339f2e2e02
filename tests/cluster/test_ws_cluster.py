"""WebSockets across cluster nodes: real nats-servers (3, R=3) and real ``duro serve --cluster`` node
processes on 127.0.0.1, real ``websockets`` clients. A client connected to node B talks to a room
object owned by node A: the connection stays on B, the socket (tags, attachment, hibernation) lives
on A, and the frames cross NATS (``cluster/router.py``, ``http/bridge.py``).

The room (``projects/rooms``) tags each socket ``user:<name>`` and ``room``, counts each socket's
messages in its attachment, stores each message before broadcasting it, answers "ping" with "pong"
without waking, and stores every constructor call and close event it was given. Every wait is
bounded; every process is stopped by PID."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import threading
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from duro.cluster.journal import STREAM
from duro.cluster.testing import NatsServers
from duro.testing import ServerProcess, wait_for

from .nodes import Nodes

PROJECT = pathlib.Path(__file__).resolve().parent / "projects" / "rooms"

pytestmark = pytest.mark.timeout(150)


@pytest.fixture
def nodes(tmp_path, nats3):
    """nodes(n, *args, call_timeout=10, servers=None) -> n duro nodes joined to the 3-server cluster
    (or ``servers``; extra ``duro serve`` args); each stopped by PID at the end (SIGCONT first, in
    case a test stopped one)."""
    nodes = Nodes(PROJECT, tmp_path, f"w{int(time.monotonic() * 1000) % 10**8}-")

    def start(n: int, *args: str, call_timeout: float = 10.0, servers=None) -> list[ServerProcess]:
        return [nodes.start((servers or nats3).urls, call_timeout=call_timeout, args=["--no-admin", *args])
                for _ in range(n)]

    yield start
    nodes.stop_all()


def join(node: ServerProcess, room: str, user: str, standard: bool = False) -> ClientConnection:
    url = node.url.replace("http://", "ws://") + f"/room/{room}"
    headers = {"x-user": user, **({"x-standard": "1"} if standard else {})}
    # Entered by hand: the tests close their clients themselves (``close()``), some more than once.
    ws = connect(url, additional_headers=headers, open_timeout=30, close_timeout=5, max_size=64 << 20).__enter__()
    if not standard:  # sent by the object before its 101: across nodes it may arrive before the 101 does
        assert recv(ws) == f"welcome {user}"
    return ws


def info(node: ServerProcess, room: str) -> dict:
    r = httpx.get(f"{node.url}/info/{room}", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def recv(ws: ClientConnection, timeout: float = 15) -> str:
    return ws.recv(timeout=timeout)  # type: ignore[return-value]


def who(ws: ClientConnection) -> dict:
    ws.send("who")
    return json.loads(recv(ws))


def closed_with(ws: ClientConnection, timeout: float) -> tuple[int | None, str, float]:
    """Wait (bounded) until the server closes ``ws``: (code, reason, seconds waited)."""
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        try:
            ws.recv(timeout=max(0.05, deadline - time.monotonic()))
        except TimeoutError:
            break
        except ConnectionClosed as e:
            rcvd = e.rcvd
            return (rcvd.code if rcvd else None), (rcvd.reason if rcvd else ""), time.monotonic() - start
    raise AssertionError(f"the connection was not closed within {timeout} s")


def test_client_on_another_node_talks_to_the_owner(nodes):
    a, b = nodes(2)
    alice = join(a, "r1", "alice")  # first come: node a takes the room
    assert info(a, "r1")["node"] == a.name
    bob = join(b, "r1", "bob")  # node b forwards the upgrade to a, and bridges the socket
    try:
        # Messages both ways, in order: each one is stored on a, then broadcast to both nodes' clients.
        n = 30
        for i in range(n):
            bob.send(f"m{i}")
        want = [f"bob:m{i}:{i + 1}" for i in range(n)]
        assert [recv(bob) for _ in range(n)] == want
        assert [recv(alice) for _ in range(n)] == want
        alice.send("hello")
        assert recv(bob) == "alice:hello:1"
        assert recv(alice) == "alice:hello:1"

        # The auto-response is answered on the owner, through the bridge.
        bob.send("ping")
        assert recv(bob) == "pong"

        # get_websockets, tags and attachments see the bridged socket as a local one.
        seen = who(bob)
        assert seen["node"] == a.name
        socks = {tuple(s["tags"]): s["att"] for s in seen["sockets"]}  # "ping" woke nothing: not counted
        assert socks == {("user:alice", "room"): {"user": "alice", "count": 1},
                         ("user:bob", "room"): {"user": "bob", "count": n + 1}}
        alice.send("to:bob:secret")  # a tag picks the bridged socket
        assert recv(bob) == "from alice:secret"

        # A message larger than one NATS message (1 MiB) crosses in parts, both ways.
        big = "echo:" + "".join(chr(97 + i % 26) for i in range(3 << 20))
        bob.send(big)
        assert recv(bob, 30) == big
        bob.send("ping")
        assert recv(bob) == "pong"

        # The client leaves: the owner runs websocket_close with the client's code.
        carol = join(b, "r1", "carol")
        assert len(who(carol)["sockets"]) == 3
        carol.close(code=1000, reason="done")
        wait_for(lambda: ["carol", 1000] in info(b, "r1")["closes"], timeout=20, interval=0.1,
                 what="carol's close event on the owner")
        assert info(a, "r1")["sockets"] == 2

        # The object closes the socket: the close frame comes back to the client on b.
        bob.send("close")
        code, reason, _ = closed_with(bob, 15)
        assert (code, reason) == (4000, "bye from the room")
        wait_for(lambda: info(a, "r1")["sockets"] == 1, timeout=20, interval=0.1, what="bob's socket gone")
        assert info(a, "r1")["msgs"] == n + 1
    finally:
        alice.close()
        bob.close()


def test_broadcast_order_is_the_same_on_three_nodes(nodes):
    """Clients on the owner and on two other nodes send at once: every client receives every
    broadcast, each sender's in its order, and all of them in the one order the room sent them."""
    a, b, c = nodes(3)
    first = join(a, "b3", "ann")
    assert info(a, "b3")["node"] == a.name
    clients = [first, join(b, "b3", "ben"), join(c, "b3", "cid")]
    users = ["ann", "ben", "cid"]
    n = 20
    try:
        threads = [threading.Thread(target=lambda ws=ws, u=u: [ws.send(f"{u}{i}") for i in range(n)])
                   for ws, u in zip(clients, users)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        seen = [[recv(ws) for _ in range(3 * n)] for ws in clients]
        assert seen[0] == seen[1] == seen[2]  # one order, whichever node holds the connection
        for u in users:
            mine = [m.split(":")[1] for m in seen[0] if m.startswith(f"{u}:")]
            assert mine == [f"{u}{i}" for i in range(n)]
    finally:
        for ws in clients:
            ws.close()


def test_standard_socket_on_another_node(nodes):
    """A standard (not hibernatable) socket is bridged too: its listeners run on the owner."""
    a, b = nodes(2)
    alice = join(a, "std1", "alice")  # node a takes the room
    assert info(a, "std1")["node"] == a.name
    dan = join(b, "std1", "dan", standard=True)
    try:
        for i in range(20):
            dan.send(f"s{i}")
        assert [recv(dan) for _ in range(20)] == [f"std:s{i}#{i + 1}" for i in range(20)]
        dan.close(code=1000, reason="done")
        wait_for(lambda: ["dan", 1000] in info(b, "std1")["closes"], timeout=20, interval=0.1,
                 what="the standard socket's close listener on the owner")
        assert info(a, "std1")["msgs"] == 20
    finally:
        alice.close()
        dan.close()


def test_round_trip_latency_same_node_and_across(nodes):
    """Printed (pytest -s): a message's round trip (send, stored, broadcast back) for a client on
    the owner and for one on another node."""
    a, b = nodes(2)
    local = join(a, "lat", "local")
    remote = join(b, "lat", "remote")
    try:
        assert who(remote)["node"] == a.name
        for ws, other, where in ((local, remote, "on the owner"), (remote, local, "on another node")):
            times = []
            for i in range(200):
                t = time.perf_counter()
                ws.send(f"x{i}")
                assert recv(ws).split(":")[1] == f"x{i}"  # its own message, stored and broadcast back
                times.append(time.perf_counter() - t)
            for i in range(200):
                assert recv(other).split(":")[1] == f"x{i}"  # the other client's copies, in order
            times.sort()
            print(f"round trip, client {where}: p50 {times[100] * 1000:.2f} ms, p99 {times[197] * 1000:.2f} ms")
    finally:
        local.close()
        remote.close()


def test_hibernation_across_nodes(nodes):
    """The owner evicts the room (hibernation timeout 1 s) while a bridged socket stays open; a
    message from that socket wakes it; attachments kept what the earlier instance wrote."""
    a, b = nodes(2, "--hibernation-timeout", "1")
    alice = join(a, "h1", "alice")
    assert info(a, "h1")["node"] == a.name
    bob = join(b, "h1", "bob")
    try:
        bob.send("one")
        assert recv(bob) == "bob:one:1"
        assert recv(alice) == "bob:one:1"
        first = who(bob)["boot"]

        # Only bob's messages reach the room from here on: a new instance answering is one that
        # bob's bridged message woke after the owner evicted the last one.
        start, tries = time.monotonic(), 0
        while True:
            time.sleep(1.5)  # longer than the hibernation timeout: the next message may find it evicted
            seen = who(bob)
            tries += 1
            if seen["boot"] > first:
                break
            assert time.monotonic() - start < 40, "the room was never evicted"
        assert seen["node"] == a.name  # woken on its owner
        socks = {x["att"]["user"]: x for x in seen["sockets"]}
        assert set(socks) == {"alice", "bob"}  # the new instance sees both sockets, with their tags
        assert socks["bob"]["tags"] == ["user:bob", "room"]
        # The attachment counted every message across the evictions: "one", the first "who", each try.
        count = socks["bob"]["att"]["count"]
        assert count == 2 + tries
        bob.send("hi")
        assert recv(bob) == recv(alice) == f"bob:hi:{count + 1}"
        bob.send("ping")
        assert recv(bob) == "pong"
    finally:
        alice.close()
        bob.close()


def test_owner_killed_client_reconnects_to_new_owner(nodes):
    a, b = nodes(2)
    alice = join(a, "k1", "alice")
    assert info(a, "k1")["node"] == a.name
    bob = join(b, "k1", "bob")
    bob.send("before")
    assert recv(bob) == "bob:before:1"
    os.kill(a.proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    code, reason, waited = closed_with(bob, 20)
    print(f"bridged client closed {waited:.2f} s after SIGKILL of the owner, code {code}")
    assert code == 1012 and "reconnect" in reason
    assert waited < 15
    alice.close()
    # A reconnect reaches the new owner (node b claims the room once a's lease is gone).
    bob = wait_for(lambda: _try_join(b, "k1", "bob"), timeout=30, interval=0.2, what="a reconnect")
    try:
        seen = who(bob)
        assert seen["node"] == b.name
        bob.send("after")
        assert recv(bob) == "bob:after:2"  # who counted 1
        assert info(b, "k1")["msgs"] == 2  # the message stored before the kill is there
        print(f"reconnected to the new owner {time.monotonic() - killed:.2f} s after the kill")
    finally:
        bob.close()


def _try_join(node: ServerProcess, room: str, user: str) -> ClientConnection | None:
    try:
        return join(node, room, user)
    except Exception:  # noqa: BLE001 - refused while the room moves (503): try again
        return None


def test_owner_stopped_gracefully_closes_bridged_client(nodes):
    a, b = nodes(2)
    alice = join(a, "g1", "alice")
    assert info(a, "g1")["node"] == a.name
    bob = join(b, "g1", "bob")
    bob.send("x")
    assert recv(bob) == "bob:x:1"
    a.proc.send_signal(signal.SIGTERM)
    code, _, waited = closed_with(bob, 15)
    print(f"bridged client closed {waited:.2f} s after SIGTERM of the owner, code {code}")
    assert code == 1012
    alice.close()
    bob = wait_for(lambda: _try_join(b, "g1", "bob"), timeout=30, interval=0.2, what="a reconnect")
    try:
        assert who(bob)["node"] == b.name
    finally:
        bob.close()


def test_owner_stopped_and_resumed_sockets_move(nodes):
    """SIGSTOP of the owner past its lease: the bridged client is closed 1012 (its node finds the
    owner's registration gone) and reconnects to the new owner; after SIGCONT the old owner, self-
    fenced, drops the room and closes its own local client 1012 too, which reconnects through it."""
    a, b = nodes(2, call_timeout=3)
    alice = join(a, "s1", "alice")
    assert info(a, "s1")["node"] == a.name
    bob = join(b, "s1", "bob")
    bob.send("x")
    assert recv(alice) == "bob:x:1"
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        code, _, waited = closed_with(bob, 20)
        print(f"bridged client closed {waited:.2f} s after SIGSTOP of the owner, code {code}")
        assert code == 1012
        bob = wait_for(lambda: _try_join(b, "s1", "bob"), timeout=40, interval=0.2, what="bob's reconnect")
        assert who(bob)["node"] == b.name
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    code, _, waited = closed_with(alice, 20)
    print(f"local client of the resumed old owner closed {waited:.2f} s after SIGCONT, code {code}")
    assert code == 1012
    alice = wait_for(lambda: _try_join(a, "s1", "alice"), timeout=40, interval=0.2, what="alice's reconnect")
    try:
        alice.send("back")
        assert recv(alice) == "alice:back:1"
        assert recv(bob) == "alice:back:1"  # the room on b, its two clients on both nodes
        assert {s["att"]["user"] for s in who(bob)["sockets"]} == {"alice", "bob"}
        assert info(a, "s1")["msgs"] == 2
    finally:
        alice.close()
        bob.close()


def test_accepting_node_killed_owner_gets_close_1006(nodes):
    a, b = nodes(2)
    alice = join(a, "d1", "alice")
    assert info(a, "d1")["node"] == a.name
    bob = join(b, "d1", "bob")
    try:
        bob.send("x")
        assert recv(alice) == "bob:x:1"
        os.kill(b.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: ["bob", 1006] in info(a, "d1")["closes"], timeout=20, interval=0.1,
                 what="websocket_close 1006 for the client of the dead node")
        print(f"owner delivered websocket_close 1006 {time.monotonic() - killed:.2f} s after SIGKILL of the "
              "accepting node")
        assert len(who(alice)["sockets"]) == 1
    finally:
        alice.close()


def test_accepting_node_stopped_gracefully_owner_gets_close(nodes):
    """SIGTERM of the node holding the connection: it closes its client 1012 as any stopping server
    does; the object lives on elsewhere, so its owner delivers websocket_close (1006, the client
    vanished) rather than treating it as its own shutdown."""
    a, b = nodes(2)
    alice = join(a, "t1", "alice")
    assert info(a, "t1")["node"] == a.name
    bob = join(b, "t1", "bob")
    try:
        bob.send("x")
        assert recv(alice) == "bob:x:1"
        b.proc.send_signal(signal.SIGTERM)
        code, _, _ = closed_with(bob, 15)
        assert code == 1012
        wait_for(lambda: ["bob", 1006] in info(a, "t1")["closes"], timeout=20, interval=0.1,
                 what="websocket_close 1006 for the client of the stopped node")
        assert len(who(alice)["sockets"]) == 1
    finally:
        alice.close()
        bob.close()


def _seal_journal(servers: NatsServers) -> None:
    """Seal the journal stream: from now on the servers refuse every append."""
    import nats

    async def seal() -> None:
        nc = await nats.connect(servers.urls)
        try:
            js = nc.jetstream(timeout=10)
            config = (await js.stream_info(STREAM)).config
            config.sealed = True
            await js.update_stream(config)
        finally:
            await nc.close()

    asyncio.run(seal())


def test_a_message_after_a_refused_commit_never_leaves(nodes):
    """The output gate across nodes: the room stores each message before it broadcasts it. Once the
    servers refuse appends (the journal stream sealed, on a server of this test's own), a message's
    commit is never acknowledged: its broadcast must reach no client, on the owner or bridged; the
    owner drops the room and closes both sockets 1012 instead."""
    with NatsServers(1) as own:
        a, b = nodes(2, servers=own)
        alice = join(a, "o1", "alice")
        assert info(a, "o1")["node"] == a.name
        bob = join(b, "o1", "bob")
        try:
            bob.send("kept")
            assert recv(bob) == "bob:kept:1" and recv(alice) == "bob:kept:1"
            _seal_journal(own)
            bob.send("refused")  # its commit is refused: "bob:refused:2" must never be sent
            for ws in (bob, alice):
                try:
                    got = recv(ws, 20)
                except ConnectionClosed as e:
                    assert e.rcvd is not None and e.rcvd.code == 1012, e
                else:
                    raise AssertionError(f"a message left although the commit before it was refused: {got!r}")
        finally:
            alice.close()
            bob.close()
