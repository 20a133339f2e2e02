"""What an operator asks one worker and every worker must answer: ``/metrics``, ``duro tail`` and
the dashboard's open sockets under ``duro serve --workers N``.

``/metrics`` reaches whichever worker accepted the connection; that worker asks each other worker
for its own text (a router call) and merges them, every sample labelled ``worker="<k>"`` (each
worker counts its own requests and objects; Prometheus sums them with ``sum without (worker)``).
A worker that does not answer within ``METRICS_TIMEOUT_S`` is left out, and a comment says so.

``duro tail`` likewise: the worker that holds the stream opens a subscription with the same filter
on every other worker, which sends its records back over the link as they happen (``tail.ev``),
until the stream closes it (``tail.close``) or the link goes.

The dashboard's sockets view: each worker's connection counts are added up, and each object with
hibernatable WebSockets is listed once, by the worker that holds it (``worker``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from typing import TYPE_CHECKING, Any

import msgpack

from ..runtime.tasks import stop_task

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..runtime.events import Subscription
    from ..runtime.router import Link

__all__ = ["WorkerFanout", "install_fanout", "label_metrics"]

log = logging.getLogger("duro.admin")

METRICS_TIMEOUT_S = 5.0
POLL_S = 0.25


class _Remote:
    """An event record from another worker, already as JSON."""

    __slots__ = ("data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def to_json(self) -> dict[str, Any]:
        return self.data


class WorkerFanout:
    def __init__(self, runtime: "Runtime") -> None:
        self.runtime = runtime
        self.front: Any = None  # the AsgiFront (its request metrics), set by it
        router = runtime.router
        assert router is not None
        self.router = router
        self._ids = itertools.count(1)
        self.streams: dict[int, "Subscription"] = {}  # our tail streams, fed by the other workers
        self.feeds: dict[tuple[int, int], asyncio.Task[None]] = {}  # (id(link), stream) -> feeding task
        router.handle("metrics", self._metrics_call)
        router.handle("sockets", self._sockets_call)
        router.handle("tail.open", self._tail_open)
        router.handle_one_way("tail.ev", self._tail_ev)
        router.handle_one_way("tail.close", self._tail_close)

    def _peers(self) -> list[int]:
        slot = self.router.slot
        return [i for i in range(slot.count) if i != slot.index]

    async def _ask_every_worker(self, op: str) -> list[tuple[int, bytes | None]]:
        """(worker, its answer to ``op``) of every other worker; None for one that did not answer
        within ``METRICS_TIMEOUT_S`` (logged)."""
        async def ask(i: int) -> tuple[int, bytes | None]:
            try:
                async with asyncio.timeout(METRICS_TIMEOUT_S):
                    return i, await self.router.call(i, op, "", "", None, "", b"")
            except Exception as e:
                log.warning("worker %d did not answer %s: %s", i, op, e)
                return i, None
        return list(await asyncio.gather(*(ask(i) for i in self._peers())))

    # ------------------------------------------------------------------ metrics
    async def metrics(self, local: str) -> str:
        texts = [(self.router.slot.index, local)] + [
            (i, None if got is None else got.decode()) for i, got in await self._ask_every_worker("metrics")]
        return label_metrics(texts)

    async def _metrics_call(self, namespace: str, hex_id: str, name: str | None, label: str, payload: bytes,
                            link: "Link") -> bytes:
        from .observe import render_metrics
        return render_metrics(self.runtime, self.front).encode()

    # ------------------------------------------------------------------ sockets
    async def sockets(self, local: dict[str, Any]) -> dict[str, Any]:
        """``local`` (this worker's ``admin_views.sockets``) merged with every other worker's."""
        answers = [(self.router.slot.index, local)] + [
            (i, None if got is None else json.loads(got)) for i, got in await self._ask_every_worker("sockets")]
        conns = {"http": 0, "websocket": 0}
        objects: list[dict[str, Any]] = []
        for worker, got in answers:
            if got is None:
                continue
            for kind in conns:
                conns[kind] += got["connections"].get(kind, 0)
            objects += [{**o, "worker": worker} for o in got["objects"]]
        return {"connections": conns, "objects": objects,
                "missing_workers": [w for w, got in answers if got is None]}

    async def _sockets_call(self, namespace: str, hex_id: str, name: str | None, label: str, payload: bytes,
                            link: "Link") -> bytes:
        from .admin_views import sockets
        return json.dumps(sockets(self.runtime, self.front)).encode()

    # ------------------------------------------------------------------ tail
    async def open_tail(self, sub: "Subscription", query: bytes) -> int:
        """Feed ``sub`` with the matching records of every other worker too. Returns the stream's
        id, for :meth:`close_tail`."""
        stream = next(self._ids)
        self.streams[stream] = sub

        async def open_on(i: int) -> None:
            try:
                async with asyncio.timeout(METRICS_TIMEOUT_S):
                    await self.router.call(i, "tail.open", "", "", None, str(stream), query)
            except Exception as e:
                log.warning("worker %d cannot be tailed: %s", i, e)
        await asyncio.gather(*(open_on(i) for i in self._peers()))
        return stream

    def close_tail(self, stream: int) -> None:
        self.streams.pop(stream, None)
        for i in self._peers():
            self.router.link_to(i).post("tail.close", str(stream).encode())

    async def _tail_open(self, namespace: str, hex_id: str, name: str | None, label: str, payload: bytes,
                         link: "Link") -> bytes:
        from .observe import parse_tail_filter
        flt, size = parse_tail_filter(payload)
        stream = int(label)
        sub = self.runtime.events.subscribe(flt, size)
        key = (id(link), stream)
        self.feeds[key] = asyncio.ensure_future(self._feed(sub, link, stream, key))
        link.on_close(lambda: self._stop(key))
        return b"ok"

    async def _feed(self, sub: "Subscription", link: "Link", stream: int, key: tuple[int, int]) -> None:
        reported = 0
        try:
            while not link.closed:
                batch = await sub.wait(POLL_S)
                if not batch and sub.dropped == reported:
                    continue
                msg = [stream, [r.to_json() for r in batch], sub.dropped - reported]
                reported = sub.dropped
                if not link.post("tail.ev", msgpack.packb(msg, use_bin_type=True, default=str)):
                    break
        finally:
            sub.close()
            self.feeds.pop(key, None)

    def _stop(self, key: tuple[int, int]) -> None:
        task = self.feeds.pop(key, None)
        if task is not None:
            task.cancel()

    def _tail_ev(self, namespace: str, hex_id: str, name: str | None, label: str, payload: bytes,
                 link: "Link") -> None:
        stream, records, dropped = msgpack.unpackb(payload, raw=False)
        sub = self.streams.get(stream)
        if sub is None:
            return
        for data in records:
            sub.offer(_Remote(data))  # type: ignore[arg-type]
        sub.dropped += dropped

    def _tail_close(self, namespace: str, hex_id: str, name: str | None, label: str, payload: bytes,
                    link: "Link") -> None:
        self._stop((id(link), int(payload)))

    async def close(self) -> None:
        for task in list(self.feeds.values()):
            await stop_task(task)


def label_metrics(texts: list[tuple[int, str | None]]) -> str:
    """Prometheus texts of several workers as one: each sample gets a ``worker`` label, each
    family's HELP and TYPE once, its samples together."""
    families: dict[str, tuple[list[str], list[str]]] = {}
    missing = []
    for worker, text in texts:
        if text is None:
            missing.append(worker)
            continue
        family = None
        for line in text.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                family = line.split(" ", 3)[2]
                meta, _ = families.setdefault(family, ([], []))
                if line not in meta:
                    meta.append(line)
            elif line and not line.startswith("#") and family is not None:
                name, brace, rest = line.partition("{")
                if brace:
                    labelled = f'{name}{{worker="{worker}",{rest}' if not rest.startswith("}") \
                        else f'{name}{{worker="{worker}"{rest}'
                else:
                    metric, _, value = line.partition(" ")
                    labelled = f'{metric}{{worker="{worker}"}} {value}'
                families[family][1].append(labelled)
    out = [f"# worker {w} did not answer within {METRICS_TIMEOUT_S:g} s: its metrics are missing" for w in missing]
    for meta, samples in families.values():
        out += meta + samples
    return "\n".join(out) + "\n"


def install_fanout(runtime: "Runtime") -> WorkerFanout | None:
    if runtime.router is None or getattr(runtime.router, "crosses_nodes", False):
        return None  # one process, or a cluster node (its metrics and tails are its own)
    fanout = WorkerFanout(runtime)
    runtime.fanout = fanout  # type: ignore[attr-defined]
    return fanout
