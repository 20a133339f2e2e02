"""A network partition on 127.0.0.1 without root: TCP proxies between one process and its servers
that can blackhole the link.

``LinkProxy([port, ...])`` listens on a free port in front of each upstream port, in an event loop of
its own (a thread). While forwarding, bytes go both ways untouched. ``blackhole()`` stops forwarding
(on every link, or on the links to the upstreams at the given indices) in both directions
**without closing anything**: what the sockets hold stays there, connections stay
open, and a new connection is accepted but never reaches its server, as when a cable is cut
between two machines (nothing tells either side; only their own timeouts do). ``heal()`` forwards
again, including what was held, and a side that closed meanwhile is then closed on the other.
``stop()`` closes everything.

Never: close a connection because of a blackhole, or wait without a deadline.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any


class LinkProxy:
    def __init__(self, upstreams: list[int]) -> None:
        self.upstreams = upstreams
        self.ports: list[int] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="link-proxy", daemon=True)
        self._open: list[asyncio.Event] = []
        self._servers: list[asyncio.AbstractServer] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    def _run(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> "LinkProxy":
        self._thread.start()

        async def listen() -> None:
            for i in range(len(self.upstreams)):
                self._open.append(asyncio.Event())
                self._open[i].set()
                srv = await asyncio.start_server(lambda r, w, i=i: self._client(r, w, i), "127.0.0.1", 0,
                                                 family=socket.AF_INET)
                self._servers.append(srv)
                self.ports.append(srv.sockets[0].getsockname()[1])

        self._run(listen())
        return self

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{p}" for p in self.ports]

    def blackhole(self, which: list[int] | None = None) -> None:
        """Stop forwarding, both ways, closing nothing: on the links to the upstreams at indices
        ``which`` (all by default)."""
        for i in range(len(self.upstreams)) if which is None else which:
            self._loop.call_soon_threadsafe(self._open[i].clear)

    def heal(self) -> None:
        for event in self._open:
            self._loop.call_soon_threadsafe(event.set)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, i: int) -> None:
        self.connections += 1
        self._writers.add(writer)
        is_open = self._open[i]
        try:
            await is_open.wait()  # a connection made during a blackhole reaches nothing until healed
            try:
                ureader, uwriter = await asyncio.open_connection("127.0.0.1", self.upstreams[i])
            except OSError:
                writer.close()
                return
            self._writers.add(uwriter)
            await asyncio.gather(self._pump(reader, uwriter, is_open), self._pump(ureader, writer, is_open))
        finally:
            self._writers.discard(writer)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    is_open: asyncio.Event) -> None:
        try:
            while True:
                await is_open.wait()
                data = await reader.read(65536)
                if not data:
                    break
                await is_open.wait()  # read just as the blackhole began: held, not delivered
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def stop(self) -> None:
        async def close() -> None:
            for srv in self._servers:
                srv.close()
            for w in list(self._writers):
                w.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)

        if self._thread.is_alive():
            try:
                self._run(close())
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(10)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()
