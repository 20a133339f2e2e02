"""What the admin endpoint shows an operator of a running server: ``GET /__duro/admin/metrics``
(Prometheus text) and ``GET /__duro/admin/tail`` (a live stream of event records, one JSON object
a line, for ``duro tail``).

The tail stream reads records from a bounded :class:`~duro.runtime.events.Subscription`: when the
client reads slower than events happen, the queue fills and further records are dropped and
counted (a ``{"type": "dropped"}`` line says how many), so a slow or stalled client never holds
up an event. The stream ends when the client goes away or the server shuts down.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.parse
from typing import Any, Awaitable, Callable

from ..runtime.events import EVENT_KINDS, EVENT_STATUSES, TailFilter
from ..runtime.metrics import Counter, Gauge, Histogram, render

__all__ = ["METRICS_CONTENT_TYPE", "render_metrics", "stream_tail", "parse_tail_filter", "FrontMetrics"]

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
HEARTBEAT_S = 15.0  # an idle stream sends a heartbeat line this often (proxies, dead clients)
POLL_S = 0.5  # how often a waiting stream looks for a disconnect or a shutdown
MAX_QUEUE = 10_000

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class FrontMetrics:
    """The HTTP front's own counters (updated on every request)."""

    def __init__(self) -> None:
        self.requests = Counter("duro_http_requests", "HTTP responses sent, by status code.", ("code",))
        self.latency = Histogram("duro_http_request_duration_seconds", "Time from a request's arrival "
                                 "to its response, on the serving port.")


def _count_files(folder: str) -> int:
    n = 0
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.endswith(".sqlite"):
                    n += 1
    except OSError:
        return 0
    return n


def render_metrics(runtime: Any, front: Any = None) -> str:
    """Every metric of this server, in Prometheus text format."""
    hub = runtime.events
    metrics: list[Any] = []
    if front is not None:
        fm: FrontMetrics = front.metrics
        metrics += [fm.requests, fm.latency]
        refused = Counter("duro_front_refusals", "Requests and connections the front refused itself "
                          "(limits, overload), by status.", ("code",))
        for code, n in sorted(front.guard.refused.items()):
            refused.inc((str(code),), n)
        conns = Gauge("duro_connections_open", "Open client connections, by kind.", ("kind",))
        open_conns = getattr(front.guard, "connections", None) or ()
        ws = sum(1 for c in open_conns if type(c).__name__ == "WebSocketConnection")
        conns.set(len(open_conns) - ws, ("http",))
        conns.set(ws, ("websocket",))
        bodies = Gauge("duro_request_body_bytes_in_flight", "Bytes of request bodies received and not yet "
                       "answered (capped by limits.max_body_bytes_in_flight).")
        bodies.set(front.guard.body_bytes_in_flight)
        metrics += [refused, conns, bodies]
    acts = runtime.activations()
    active = Gauge("duro_objects_active", "Objects with a live instance in memory.", ("class",))
    open_dbs = Gauge("duro_objects_open_databases", "Objects whose database is open.")
    queue = Gauge("duro_queue_depth", "Events running or waiting in objects, all together.")
    waiting = Gauge("duro_queue_waiting", "Events waiting at a locked input gate, all together.")
    deepest = Gauge("duro_queue_depth_max", "Events running or waiting in the busiest object.")
    per_class: dict[str, int] = {}
    live: set[tuple[str, str]] = set()
    for a in acts:
        if a.instance is not None:
            cls = hub.class_name(a.unique_key)
            per_class[cls] = per_class.get(cls, 0) + 1
            live.add((a.unique_key, str(a.id)))
    for key in runtime.classes:
        active.set(per_class.get(hub.class_name(key), 0), (hub.class_name(key),))
    open_dbs.set(sum(1 for a in acts if a.db.is_open))
    queue.set(sum(a.inflight for a in acts))
    waiting.set(sum(a.waiting for a in acts))
    deepest.set(max((a.inflight for a in acts), default=0))
    hib = runtime.hibernation
    hibernated = Gauge("duro_objects_hibernated", "Objects with open hibernatable WebSockets and no "
                       "instance in memory.")
    sockets = Gauge("duro_websockets_hibernatable", "Open hibernatable WebSockets accepted by objects.")
    n_hib = n_sock = 0
    for key, count in hib.socket_counts():
        n_sock += count
        if key not in live:
            n_hib += 1
    hibernated.set(n_hib)
    sockets.set(n_sock)
    stored = Gauge("duro_objects_stored", "Objects with a database file on disk (counted at scrape).", ("class",))
    for key in sorted(runtime.classes):
        stored.set(_count_files(str(runtime.objects_dir / key)), (hub.class_name(key),))
    metrics += [active, open_dbs, hibernated, stored, sockets, queue, waiting, deepest]
    metrics += hub.metrics()
    alarms = runtime.alarms.statistics()
    alarm_counts = Counter("duro_alarms", "Alarm handler runs, by outcome.", ("outcome",))
    for outcome in ("succeeded", "failed", "dropped"):
        alarm_counts.inc((outcome,), alarms.get(outcome, 0))
    metrics.append(alarm_counts)
    journal = runtime.journal
    if journal is not None:
        metrics += [journal.batch_commits, journal.fsync_seconds]
    barrier = runtime.barrier.statistics()
    commits = Counter("duro_commits", "Commits that wrote, handed to the durability barrier.")
    commits.inc((), barrier.get("commits", 0))
    flushes = Counter("duro_durability_flushes", "fdatasync batches (one covers many commits).")
    flushes.inc((), barrier.get("flushes", 0))
    metrics += [commits, flushes]
    more = getattr(getattr(runtime, "router", None), "metrics", None)  # a cluster node's own
    if more is not None:
        metrics += more()
    times = os.times()
    cpu = Counter("process_cpu_seconds", "User and system CPU time of the server process.")
    cpu.inc((), times.user + times.system)
    metrics.append(cpu)
    return render(metrics)


def parse_tail_filter(query: bytes) -> tuple[TailFilter, int]:
    """The filter and queue size from ``?object=&class=&status=&kind=&sample=&queue=``; ValueError
    naming what is wrong."""
    q = urllib.parse.parse_qs(query.decode("latin-1"), keep_blank_values=False)
    statuses = frozenset(q.get("status", ()))
    bad = statuses - set(EVENT_STATUSES)
    if bad:
        raise ValueError(f"unknown status {sorted(bad)[0]!r}; use one of {', '.join(EVENT_STATUSES)}")
    kinds = frozenset(q.get("kind", ()))
    bad = kinds - set(EVENT_KINDS)
    if bad:
        raise ValueError(f"unknown kind {sorted(bad)[0]!r}; use one of {', '.join(EVENT_KINDS)}")
    try:
        sample = float(q.get("sample", ["1"])[-1])
        size = int(q.get("queue", ["1000"])[-1])
    except ValueError:
        raise ValueError("sample must be a number in (0, 1] and queue a whole number") from None
    if not 0 < sample <= 1:
        raise ValueError(f"sample must be in (0, 1], not {sample}")
    if not 1 <= size <= MAX_QUEUE:
        raise ValueError(f"queue must be between 1 and {MAX_QUEUE}, not {size}")
    return TailFilter(objects=frozenset(q.get("object", ())), classes=frozenset(q.get("class", ())),
                      statuses=statuses, kinds=kinds, sample=sample), size


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, default=str).encode() + b"\n"


async def stream_tail(runtime: Any, scope: dict[str, Any], receive: Receive, send: Send,
                      stopping: Callable[[], bool]) -> None:
    """Answer ``GET /__duro/admin/tail`` (already authorized) with newline-delimited JSON until
    the client disconnects or ``stopping()`` says the server is shutting down."""
    try:
        flt, size = parse_tail_filter(scope.get("query_string") or b"")
    except ValueError as e:
        body = _line({"error": str(e)})
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return
    hub = runtime.events
    sub = hub.subscribe(flt, size)
    fanout = getattr(runtime, "fanout", None)  # worker processes: the others' records come too
    stream = await fanout.open_tail(sub, scope.get("query_string") or b"") if fanout is not None else None
    gone = asyncio.Event()

    async def watch() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
                return

    watcher = asyncio.ensure_future(watch())
    try:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/x-ndjson"), (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "more_body": True,
                    "body": _line({"type": "hello", "pid": os.getpid(), "queue": size,
                                   "filter": {"object": sorted(flt.objects), "class": sorted(flt.classes),
                                              "status": sorted(flt.statuses), "kind": sorted(flt.kinds),
                                              "sample": flt.sample}})})
        reported = 0
        last_sent = time.monotonic()
        while not gone.is_set() and not stopping():
            batch = await sub.wait(POLL_S)
            chunks = [_line({"type": "event", **r.to_json()}) for r in batch]
            if sub.dropped != reported:
                chunks.append(_line({"type": "dropped", "count": sub.dropped - reported, "total": sub.dropped}))
                reported = sub.dropped
            if not chunks and time.monotonic() - last_sent >= HEARTBEAT_S:
                chunks.append(_line({"type": "heartbeat"}))
            if chunks and not gone.is_set():
                # Waits while the client's socket buffer is full; the subscription keeps filling
                # (and dropping) meanwhile, never the events.
                await send({"type": "http.response.body", "body": b"".join(chunks), "more_body": True})
                last_sent = time.monotonic()
        if not gone.is_set():
            # Shutting down: what is queued still goes out, then the stream ends.
            rest = b"".join(_line({"type": "event", **r.to_json()}) for r in sub.take_nowait())
            await send({"type": "http.response.body", "body": rest, "more_body": False})
    finally:
        sub.close()
        if stream is not None:
            fanout.close_tail(stream)
        watcher.cancel()
        try:
            await watcher
        except asyncio.CancelledError:
            pass
